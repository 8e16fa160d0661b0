"""The CRDs: one source, real validation, and the operator's spec models agreeing with them.

Without an API server the openAPIV3Schema is checked with jsonschema (the structural schema translated the way the
API server reads it: defaults applied first, unknown fields rejected as `kubectl --validate=strict` does), and the
CEL rules (`x-kubernetes-validations`) are evaluated with cel-python on the defaulted object, each rule at its own
node with `self` bound to the value there and numbers typed by the schema, as the API server does. Every rule has a
bad spec below that only that rule forbids, and the operator's pydantic model refuses it with the rule's own message;
over a grid of field combinations, "schema and CEL accept" equals "the model accepts". The kind suite (tests/e2e)
sends the same bad specs to a real API server.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from crd_cases import (
    CEL_CASES,
    CPU_MODEL,
    SCHEMA_ACCEPTS,
    SCHEMA_REJECTS,
    capture_profile_grid,
    inference_model_grid,
)
from korall_operator import status as st
from korall_operator.manifests import MODEL_ANNOTATION, SPEC_HASH_ANNOTATION
from korall_operator.specs import SpecError, parse_capture_profile, parse_inference_model

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
CHART_CRD_DIR = ROOT / "charts" / "korall" / "crds"
SAMPLES = sorted((ROOT / "samples").glob("*.yaml"))


@cache
def load_crd(kind: str) -> dict[str, Any]:
    for path in CRD_DIR.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return dict(doc)
    raise AssertionError(f"no CRD for {kind}")


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


def spec_schema(kind: str) -> dict[str, Any]:
    return dict(version_of(load_crd(kind))["schema"]["openAPIV3Schema"]["properties"]["spec"])


def to_json_schema(node: Any) -> Any:
    """A structural schema as JSON Schema: strict about unknown fields, like kubectl's default field validation."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Default absent fields as the API server does before validation (recursively, after a default {} too)."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = dict(value)
    for name, sub in schema["properties"].items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


@cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(to_json_schema(spec_schema(kind)))


def schema_errors(kind: str, spec: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator(kind).iter_errors(apply_defaults(spec_schema(kind), spec))]


@cache
def _cel_program(expr: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr))


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value as the CEL value the API server binds: `number` fields are doubles even when written as 1."""
    kind = schema.get("type")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return celpy.celtypes.MapType(
            {
                celpy.celtypes.StringType(k): to_cel(props.get(k, extra if isinstance(extra, dict) else {}), v)
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        return celpy.celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if isinstance(value, bool):
        return celpy.celtypes.BoolType(value)
    if kind == "number" and isinstance(value, int | float):
        return celpy.celtypes.DoubleType(value)
    return celpy.json_to_cel(value)


def cel_failures(kind: str, spec: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules the defaulted spec breaks (rules run only where their field is present)."""
    schema = spec_schema(kind)
    failures: list[str] = []

    def walk(node: dict[str, Any], value: Any) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            result = _cel_program(rule["rule"]).evaluate({"self": to_cel(node, value)})
            if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                failures.append(rule["message"])
        if isinstance(value, dict):
            for name, sub in node.get("properties", {}).items():
                if name in value:
                    walk(sub, value[name])

    walk(schema, apply_defaults(schema, spec))
    return failures


def admitted(kind: str, spec: dict[str, Any]) -> bool:
    """Would a real API server admit this spec: the openAPI schema and then the CEL rules."""
    return not schema_errors(kind, spec) and not cel_failures(kind, spec)


def cel_rules(node: Any, path: str = "spec") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, schema node, rule) for every x-kubernetes-validations rule under a schema node."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, node, rule
        for name, sub in node.get("properties", {}).items():
            yield from cel_rules(sub, f"{path}.{name}")


# ---------------------------------------------------------------------------------------------- one source


def test_chart_ships_byte_identical_crds() -> None:
    source = {p.name: p.read_bytes() for p in CRD_DIR.glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in CHART_CRD_DIR.glob("*.yaml")}
    assert set(source) == {
        "inferencemodels.korall.io.yaml",
        "captureprofiles.korall.io.yaml",
        "modelapprovals.korall.io.yaml",
    }
    assert shipped == source


@pytest.mark.parametrize("kind", ["InferenceModel", "CaptureProfile"])
def test_crd_is_a_valid_kubernetes_object(kind: str) -> None:
    crd = load_crd(kind)
    kubernetes_validate.validate(crd, "1.34.0", strict=True)
    spec = crd["spec"]
    assert spec["group"] == "korall.io" and spec["scope"] == "Namespaced"
    assert "korall" in spec["names"]["categories"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.korall.io"
    version = version_of(crd)
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "conditions", "readyReplicas", "lastFailure"} <= set(status)
    during = {"during"} if kind == "InferenceModel" else set()  # spec failures: before the catalog's gate or after
    assert set(status["lastFailure"]["properties"]) == {"reason", "message", "time", *during}
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def _statuses_the_operator_writes() -> list[tuple[str, str, dict[str, Any]]]:
    """One status of each shape the pure status functions produce, for the kinds that get it."""
    out = []
    for kind in ("InferenceModel", "CaptureProfile"):
        annotations = {SPEC_HASH_ANNOTATION: "3f1c0b9e5d2a7c41"}
        if kind == "InferenceModel":  # only the vision pod template names its model
            annotations[MODEL_ANNOTATION] = "m.tflite"
        ready = {
            "metadata": {"generation": 2},
            "spec": {"replicas": 1, "template": {"metadata": {"annotations": annotations}}},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1},
        }
        stuck_condition = {"type": "Progressing", "status": "False", "reason": st.PROGRESS_DEADLINE_EXCEEDED}
        stuck = {**ready, "status": {**ready["status"], "conditions": [stuck_condition]}}
        reconciled = st.reconciled_status(
            generation=2, expected_hash="3f1c0b9e5d2a7c41", deployment=ready, previous=None
        )
        followed = st.followed_status(reconciled, stuck)
        assert followed is not None
        during = "rollout" if kind == "InferenceModel" else None  # where a spec failure was found: models only
        failed = st.failed_status(generation=2, failure=st.Failure("InvalidSpec", "bad"), previous=None, during=during)
        out += [(kind, "reconciled", reconciled), (kind, "followed", followed), (kind, "failed", failed)]
    no_workload = st.no_workload_status(generation=2, previous=None, message="a video profile")
    return [*out, ("CaptureProfile", "no workload", no_workload)]


@pytest.mark.parametrize(
    ("kind", "shape", "status"), _statuses_the_operator_writes(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_status_schema_declares_every_field_the_operator_writes(
    kind: str, shape: str, status: dict[str, Any]
) -> None:
    """The API server prunes status fields the schema does not declare: a pruned specHash would stop the status
    from following the Deployment (status.followed_status needs it). None deletes a field in a merge patch."""
    schema = version_of(load_crd(kind))["schema"]["openAPIV3Schema"]["properties"]["status"]

    def written(fields: Any) -> Any:  # what the merge patch leaves: None removes, at any depth
        if isinstance(fields, dict):
            return {k: written(v) for k, v in fields.items() if v is not None}
        return fields

    errors = [e.message for e in jsonschema.Draft7Validator(to_json_schema(schema)).iter_errors(written(status))]
    assert not errors, f"{kind} {shape}: {errors}"


def test_short_names() -> None:
    assert load_crd("InferenceModel")["spec"]["names"]["shortNames"] == ["im"]
    assert load_crd("CaptureProfile")["spec"]["names"]["shortNames"] == ["cap"]


def test_inference_model_printer_columns_read_as_a_catalog() -> None:
    columns = version_of(load_crd("InferenceModel"))["additionalPrinterColumns"]
    default_view = [c["name"] for c in columns if not c.get("priority")]
    assert default_view == ["Stage", "SHA", "Validated", "Approved", "Serving", "Ready", "Age"]
    by_name = {c["name"]: c["jsonPath"] for c in columns}
    assert by_name["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert by_name["Model"] == ".spec.model.file"
    assert by_name["Serving"] == ".status.activeShortSha"
    assert by_name["SHA"] == ".status.catalog.shortSha"
    assert by_name["Promoted"] == '.status.conditions[?(@.type=="Promoted")].reason'


# ---------------------------------------------------------------------------------------------- samples


def sample_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in SAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return out


def test_samples_cover_the_documented_setups() -> None:
    names = {p.name for p in SAMPLES}
    assert {"usb-coral-webcam.yaml", "cpu-only.yaml", "audio.yaml"} <= names
    kinds = [(doc["kind"], doc["spec"].get("type"), doc["spec"].get("accelerator")) for _, doc in sample_objects()]
    assert ("InferenceModel", None, "edgetpu") in kinds
    assert ("InferenceModel", None, "cpu") in kinds
    assert ("CaptureProfile", "audio", None) in kinds


@pytest.mark.parametrize(("where", "doc"), sample_objects(), ids=lambda v: v if isinstance(v, str) else "")
def test_sample_is_valid_for_the_crd_and_the_operator(where: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "korall.io/v1alpha1"
    assert schema_errors(doc["kind"], doc["spec"]) == []
    assert cel_failures(doc["kind"], doc["spec"]) == []
    if doc["kind"] == "InferenceModel":
        parse_inference_model(doc["spec"])
    else:
        parse_capture_profile(doc["spec"])


def test_sample_references_resolve() -> None:
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in sample_objects()}
    for (kind, _), doc in objects.items():
        ref = doc["spec"].get("captureProfileRef")
        if kind == "InferenceModel" and ref:
            assert objects[("CaptureProfile", ref["name"])]["spec"]["type"] == "video"


# ---------------------------------------------------------------------------------------------- defaults agree


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("InferenceModel", {"model": {"file": CPU_MODEL}}),
        ("CaptureProfile", {"type": "video", "device": "/dev/video0", "video": {}}),
        ("CaptureProfile", {"type": "audio", "device": "hw:1,0", "audio": {}}),
    ],
)
def test_crd_defaults_equal_the_model_defaults(kind: str, spec: dict[str, Any]) -> None:
    parse = parse_inference_model if kind == "InferenceModel" else parse_capture_profile
    defaulted = apply_defaults(spec_schema(kind), spec)
    assert defaulted != spec  # the CRD filled something in
    assert parse(defaulted) == parse(spec)
    # and every field the CRD defaults has the same default in the model (dumped by alias, camelCase)
    dumped = parse(spec).model_dump(by_alias=True)

    def contained(small: Any, big: Any) -> bool:
        if isinstance(small, dict):
            return all(k in big and contained(v, big[k]) for k, v in small.items())
        return bool(small == big)

    assert contained(defaulted, dumped)


# ---------------------------------------------------------------------------------------------- good and bad specs


@pytest.mark.parametrize(("kind", "spec"), SCHEMA_REJECTS)
def test_schema_and_model_both_reject(kind: str, spec: dict[str, Any]) -> None:
    assert schema_errors(kind, spec), "the CRD schema accepted it"
    parse = parse_inference_model if kind == "InferenceModel" else parse_capture_profile
    with pytest.raises(SpecError):
        parse(spec)


@pytest.mark.parametrize(("kind", "spec"), SCHEMA_ACCEPTS)
def test_schema_and_model_both_accept(kind: str, spec: dict[str, Any]) -> None:
    assert schema_errors(kind, spec) == []
    assert cel_failures(kind, spec) == []
    parse = parse_inference_model if kind == "InferenceModel" else parse_capture_profile
    parse(spec)


def test_bad_resource_quantity_is_rejected_by_the_schema() -> None:
    assert schema_errors("InferenceModel", {"model": {"file": CPU_MODEL}, "resources": {"limits": {"memory": "lots"}}})


# ---------------------------------------------------------------------------------------------- CEL rules


def all_cel_rules() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    return [
        (kind, path, node, rule)
        for kind in ("InferenceModel", "CaptureProfile")
        for path, node, rule in cel_rules(spec_schema(kind))
    ]


def test_every_cel_rule_has_a_case() -> None:
    for kind in ("InferenceModel", "CaptureProfile"):
        messages = [rule["message"] for k, _, _, rule in all_cel_rules() if k == kind]
        assert len(messages) == len(set(messages)), "CEL messages must be unique (within a CRD) to be traceable"
    # a rule both CRDs share (the events block) has one message and one case
    assert sorted({rule["message"] for _, _, _, rule in all_cel_rules()}) == sorted(CEL_CASES)


@pytest.mark.parametrize(
    ("kind", "path", "node", "rule"), all_cel_rules(), ids=[r[3]["message"][:40] for r in all_cel_rules()]
)
def test_cel_rule_names_only_existing_fields(kind: str, path: str, node: dict[str, Any], rule: dict[str, Any]) -> None:
    expr = rule["rule"]
    assert expr.count("(") == expr.count(")") and expr.count("'") % 2 == 0
    for chain in re.findall(r"self((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", expr):
        schema = node
        for field in chain.strip(".").split("."):
            if field in ("startsWith", "size", "matches", "endsWith", "contains", "all", "exists"):
                break
            assert field in schema.get("properties", {}), f"{path}: {expr!r} names unknown field {field!r}"
            schema = schema["properties"][field]
    if "fieldPath" in rule:
        assert rule["fieldPath"].lstrip(".") in node["properties"]


@pytest.mark.parametrize("message", sorted(CEL_CASES))
def test_cel_rule_is_enforced_by_the_operator_with_the_same_message(message: str) -> None:
    kind, spec = CEL_CASES[message]
    assert schema_errors(kind, spec) == [], "the openAPI schema alone must accept it: only the CEL rule forbids it"
    assert cel_failures(kind, spec) == [message], "exactly this CEL rule must forbid it"
    parse = parse_inference_model if kind == "InferenceModel" else parse_capture_profile
    with pytest.raises(SpecError) as err:
        parse(spec)
    assert message in err.value.message


@pytest.mark.parametrize(
    ("kind", "grid"), [("InferenceModel", inference_model_grid), ("CaptureProfile", capture_profile_grid)]
)
def test_admission_and_operator_agree_on_every_combination(kind: str, grid: Any) -> None:
    parse = parse_inference_model if kind == "InferenceModel" else parse_capture_profile
    verdicts = {"accepted": 0, "refused": 0}
    for spec in grid():
        try:
            parse(spec)
            model_ok = True
        except SpecError:
            model_ok = False
        assert admitted(kind, spec) == model_ok, f"API server and operator disagree on {spec}"
        verdicts["accepted" if model_ok else "refused"] += 1
    assert verdicts["accepted"] >= 5 and verdicts["refused"] >= 5  # the grid covers both sides
