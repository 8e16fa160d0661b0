"""The CRDs on a real API server: what it admits and refuses is what the operator's spec models accept.

The same cases as the offline checks (tests/operator/crd_cases.py, judged there by jsonschema and cel-python), here
judged by the API server itself: structural schema, defaulting, every CEL rule with its message. Every object is
sent with `dryRun=All` (fully admitted, never stored) and `fieldValidation=Strict` (what kubectl sends: an unknown
field is refused rather than pruned). The CRDs were installed by `helm install` of the chart.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import RealClusterWithChart
from crd_cases import (
    CEL_CASES,
    CPU_MODEL,
    LARGEST_NODE_SELECTOR,
    SCHEMA_ACCEPTS,
    SCHEMA_REJECTS,
    capture_profile_grid,
    inference_model_grid,
)
from korall_operator.kube_names import NODE_SELECTOR_KEYS
from korall_operator.specs import SpecError, parse_capture_profile, parse_inference_model

ROOT = Path(__file__).resolve().parents[2]
PLURALS = {"InferenceModel": "inferencemodels", "CaptureProfile": "captureprofiles"}
PARSERS = {"InferenceModel": parse_inference_model, "CaptureProfile": parse_capture_profile}


def admit(real: RealClusterWithChart, kind: str, spec: dict[str, Any], namespace: str = "default") -> str | None:
    """None when the API server admits it (dry run), else its refusal message."""
    # A production InferenceModel names its requester, as the chart's admission policy requires (test_catalog_admission)
    meta = {"name": "probe", "annotations": {"korall.io/requested-by": "admin"}}
    body = {"apiVersion": "korall.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}
    try:
        path = f"/apis/korall.io/v1alpha1/namespaces/{namespace}/{PLURALS[kind]}"
        real.cluster.api("POST", f"{path}?dryRun=All&fieldValidation=Strict", body)
    except urllib.error.HTTPError as e:
        refusal = json.loads(e.read() or b"{}")
        assert e.code in (400, 422), refusal  # 422 Invalid (schema, CEL), 400 an unknown field (strict decoding)
        return str(refusal.get("message"))
    return None


def model_accepts(kind: str, spec: dict[str, Any]) -> bool:
    try:
        PARSERS[kind](spec)
    except SpecError:
        return False
    return True


def test_the_crds_are_established_with_their_printer_columns(real_cluster: RealClusterWithChart) -> None:
    for plural in PLURALS.values():
        crd = real_cluster.cluster.api(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.korall.io"
        )
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    out = real_cluster.cluster.run("kubectl", "get", "im", "-A")
    assert "No resources found" in out.stderr or "STAGE" in out.stdout


def test_kubectl_apply_of_the_crds_folder_is_accepted(real_cluster: RealClusterWithChart) -> None:
    """What the README tells users who do not use helm (the CRDs are already there: an update, server-side)."""
    out = real_cluster.cluster.run("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert out.stdout.count("serverside-applied") == len(list((ROOT / "crds").glob("*.yaml"))), out.stdout


@pytest.mark.parametrize("sample", sorted((ROOT / "samples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_is_admitted(real_cluster: RealClusterWithChart, sample: Path) -> None:
    out = real_cluster.cluster.run("kubectl", "apply", "--dry-run=server", "-n", "default", "-f", str(sample))
    assert out.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(sample.read_text()) if d])


@pytest.mark.parametrize(("kind", "spec"), SCHEMA_REJECTS)
def test_what_the_schema_forbids_the_api_server_refuses(
    real_cluster: RealClusterWithChart, kind: str, spec: dict[str, Any]
) -> None:
    assert admit(real_cluster, kind, spec) is not None
    assert not model_accepts(kind, spec)


@pytest.mark.parametrize(("kind", "spec"), SCHEMA_ACCEPTS)
def test_what_the_schema_allows_the_api_server_admits(
    real_cluster: RealClusterWithChart, kind: str, spec: dict[str, Any]
) -> None:
    assert admit(real_cluster, kind, spec) is None
    assert model_accepts(kind, spec)


@pytest.mark.parametrize("message", sorted(CEL_CASES))
def test_every_cel_rule_is_enforced_by_the_api_server_with_its_message(
    real_cluster: RealClusterWithChart, message: str
) -> None:
    kind, spec = CEL_CASES[message]
    refusal = admit(real_cluster, kind, spec)
    assert refusal is not None and message in refusal, refusal


@pytest.mark.parametrize(
    ("kind", "grid"), [("InferenceModel", inference_model_grid), ("CaptureProfile", capture_profile_grid)]
)
def test_the_api_server_and_the_operator_agree_on_every_combination(
    real_cluster: RealClusterWithChart, kind: str, grid: Any
) -> None:
    disagreements = [
        (spec, refusal)
        for spec in grid()
        if ((refusal := admit(real_cluster, kind, spec)) is None) != model_accepts(kind, spec)
    ]
    assert not disagreements, disagreements[:5]


@pytest.mark.parametrize("kind", sorted(PLURALS))
def test_an_oversized_map_is_refused_at_admission_with_its_bound(real_cluster: RealClusterWithChart, kind: str) -> None:
    """The adversarial case: a 2 800-label nodeSelector (360 KB) was admitted, and kopf, recording the spec it handled
    in an annotation, hit the API server's 256 KB for annotations and retried for ever. Now the CRD refuses it."""
    base = {"model": {"file": CPU_MODEL}} if kind == "InferenceModel" else {"type": "video", "video": {"source": "x"}}
    huge = {f"example.com/label-{i:04d}-{'k' * 40}": "v" * 63 for i in range(2800)}
    refusal = admit(real_cluster, kind, {**base, "nodeSelector": huge})
    assert refusal is not None and "spec.nodeSelector: Too many: 2800: must have at most 64 items" in refusal, refusal
    one_long_key = admit(real_cluster, kind, {**base, "nodeSelector": {"k" * 300_000: "v"}})
    assert one_long_key is not None and NODE_SELECTOR_KEYS in one_long_key, one_long_key[:300]
    assert admit(real_cluster, kind, {**base, "nodeSelector": LARGEST_NODE_SELECTOR}) is None
