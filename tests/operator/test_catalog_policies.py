"""The chart's catalog policies, judged offline: the ValidatingAdmissionPolicies' CEL run by cel-python, the roles.

The policies are taken from the chart as a real helm renders it, and each expression is evaluated the way the API
server does for a ValidatingAdmissionPolicy: matchConditions first (a request they do not match is admitted), then
the variables, then every validation with `object`, `oldObject` (null on CREATE), `request.userInfo` and
`variables` bound. tests/realcluster/test_catalog_admission.py holds the real API server to the same rules, with
real users (impersonation) and real RBAC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
from test_chart import by_kind, render, tools_bin  # noqa: F401  (tools_bin is a fixture)

REQUESTER = "korall.io/requested-by"


@pytest.fixture(scope="module")
def policies(tools_bin: Path) -> dict[str, dict[str, Any]]:  # noqa: F811
    kinds = by_kind(render(tools_bin))
    bound = {b["spec"]["policyName"]: b for b in kinds["ValidatingAdmissionPolicyBinding"]}
    out = {p["metadata"]["name"]: p for p in kinds["ValidatingAdmissionPolicy"]}
    assert set(bound) == set(out) == {"korall-model-approvals", "korall-model-requesters"}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bound.values())
    assert all(p["spec"]["failurePolicy"] == "Fail" for p in out.values())
    return out


def _eval(expr: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr)).evaluate(activation)


def admit(policy: dict[str, Any], user: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> str | None:
    """None when the policy admits the request, else the message of the first validation it fails."""
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel({"operation": "UPDATE" if old else "CREATE", "userInfo": {"username": user}}),
    }
    spec = policy["spec"]
    for condition in spec.get("matchConditions") or []:
        if not bool(_eval(condition["expression"], activation)):
            return None
    variables: dict[str, Any] = {}
    for variable in spec.get("variables") or []:
        variables[variable["name"]] = _eval(variable["expression"], {**activation, "variables": variables})
    activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
    for validation in spec["validations"]:
        if not bool(_eval(validation["expression"], activation)):
            if "messageExpression" in validation:
                return str(_eval(validation["messageExpression"], activation))
            return str(validation["message"])
    return None


def approval(approved_by: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "a"},
        "spec": {"inferenceModel": "yard", "sha256": "a" * 64, "approvedBy": approved_by},
    }


def model(stage: str = "production", file: str = "m.tflite", by: str | None = None, replicas: int = 1) -> dict:
    meta: dict[str, Any] = {"name": "yard"}
    if by is not None:
        meta["annotations"] = {REQUESTER: by, "kopf.korall.io/last-handled-configuration": "{}"}
    return {"metadata": meta, "spec": {"model": {"file": file}, "stage": stage, "replicas": replicas}}


def test_an_approval_names_its_creator_as_the_api_server_knows_them(policies: dict[str, Any]) -> None:
    policy = policies["korall-model-approvals"]
    assert admit(policy, "alice", approval("alice")) is None
    refusal = admit(policy, "alice", approval("bob"))
    assert refusal == "spec.approvedBy must be your own user name, alice, not bob"


@pytest.mark.parametrize(
    ("user", "obj", "old", "refused_with"),
    [
        pytest.param("alice", model(), None, "to your own user name, alice,", id="create-without-annotation"),
        pytest.param("alice", model(by="bob"), None, "to your own user name, alice,", id="create-claiming-another"),
        pytest.param("alice", model(by="alice"), None, None, id="create-stamped"),
        pytest.param("alice", model(stage="test"), None, None, id="below-production-no-stamp"),
        pytest.param("bob", model(file="n.tflite", by="alice"), model(by="alice"), "user name, bob,", id="new-model"),
        pytest.param("bob", model(file="n.tflite", by="bob"), model(by="alice"), None, id="new-model-stamped"),
        pytest.param("bob", model(by="alice"), model(stage="demo", by="alice"), "user name, bob,", id="promoted"),
        pytest.param("bob", model(by="alice", replicas=3), model(by="alice"), None, id="other-field"),
        pytest.param("bob", model(by="bob"), model(by="alice"), "changes only with its model", id="annotation-only"),
        pytest.param("bob", model(), model(by="alice"), "changes only with its model", id="annotation-removed"),
        pytest.param("alice", model(stage="test"), model(by="alice"), None, id="demoted"),
    ],
)
def test_a_production_models_requester_is_who_changed_its_model_or_stage(
    policies: dict[str, Any], user: str, obj: dict, old: dict | None, refused_with: str | None
) -> None:
    refusal = admit(policies["korall-model-requesters"], user, obj, old)
    if refused_with is None:
        assert refusal is None
    else:
        assert refusal is not None and refused_with in refusal


def test_approvers_and_editors_get_separate_roles(tools_bin: Path) -> None:  # noqa: F811
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(render(tools_bin))["ClusterRole"]}
    verbs = {
        (name, resource): sorted(rule["verbs"])
        for name in ("korall-approver", "korall-editor")
        for rule in roles[name]
        for resource in rule["resources"]
    }
    assert verbs == {
        ("korall-approver", "modelapprovals"): ["create", "get", "list", "watch"],
        ("korall-approver", "inferencemodels"): ["get", "list", "watch"],
        ("korall-editor", "inferencemodels"): ["create", "delete", "get", "list", "patch", "update", "watch"],
        ("korall-editor", "captureprofiles"): ["create", "delete", "get", "list", "patch", "update", "watch"],
        ("korall-editor", "modelapprovals"): ["get", "list", "watch"],
    }


def test_without_the_policies_the_chart_installs_none(tools_bin: Path) -> None:  # noqa: F811
    kinds = by_kind(render(tools_bin, "catalog.admissionPolicies=false"))
    assert "ValidatingAdmissionPolicy" not in kinds and "ValidatingAdmissionPolicyBinding" not in kinds
