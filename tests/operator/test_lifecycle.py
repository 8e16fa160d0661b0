"""The kopf settings korall applies: the lean diff-base storage must build exactly kopf's essence."""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf
import pytest
from korall_operator.handlers.lifecycle import KOPF_PREFIX, LeanDiffBaseStorage, configure
from korall_operator.settings import OperatorSettings

KEY = "last-handled-configuration"

INFERENCE_MODEL: dict[str, Any] = {
    "apiVersion": "korall.io/v1alpha1",
    "kind": "InferenceModel",
    "metadata": {
        "name": "yard",
        "namespace": "edge",
        "uid": "0b7e",
        "generation": 3,
        "resourceVersion": "4242",
        "labels": {"team": "yard"},
        "annotations": {
            f"{KOPF_PREFIX}/{KEY}": json.dumps({"spec": {"scoreThreshold": 0.4}}),
            "korall.io/requested-by": "alice",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "kopf.zalando.org/last-handled-configuration": "{}",  # another kopf operator's: ignored
        },
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}] * 20,
    },
    "spec": {"model": {"file": "a.tflite"}, "scoreThreshold": 0.5, "topK": 10, "stage": "production"},
    "status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving"}] * 4,
        "history": [{"event": "Promoted", "sha256": "ab" * 32}] * 50,
        "catalog": {"serving": {"key": "k", "spec": {"model": {"file": "a.tflite"}}}},
    },
}

REPLICA_SET: dict[str, Any] = {  # kopf names its annotation differently for ReplicaSets of a Deployment
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {
        "name": "yard-vision-5d8",
        "annotations": {f"{KOPF_PREFIX}/{KEY}-ofDRS": "{}", "deployment.kubernetes.io/revision": "2"},
        "ownerReferences": [{"kind": "Deployment", "name": "yard-vision", "uid": "1", "apiVersion": "apps/v1"}],
    },
    "spec": {"replicas": 1},
    "status": {"replicas": 1},
}


@pytest.mark.parametrize("raw", [INFERENCE_MODEL, REPLICA_SET, {"kind": "Thing", "spec": {}}], ids=["im", "rs", "bare"])
def test_the_lean_essence_is_kopfs_essence_with_only_korall_labels_and_annotations(raw: dict[str, Any]) -> None:
    original = copy.deepcopy(raw)
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key=KEY)
    lean = LeanDiffBaseStorage(prefix=KOPF_PREFIX, key=KEY)
    expected = copy.deepcopy(kopfs.build(body=kopf.Body(raw)))
    meta = expected.get("metadata") or {}
    for section in ("labels", "annotations"):
        own = {k: v for k, v in (meta.pop(section, None) or {}).items() if k.startswith("korall.io/")}
        if own:
            meta[section] = own
    if "metadata" in expected and not meta:
        del expected["metadata"]
    assert lean.build(body=kopf.Body(raw)) == expected
    assert lean.build(body=kopf.Body(raw), extra_fields=["status.conditions"]) == kopfs.build(
        body=kopf.Body(raw), extra_fields=["status.conditions"]
    )
    assert raw == original  # the body is not changed on the way


def test_the_lean_essence_does_not_share_the_bodys_objects() -> None:
    """kopf keeps the essence; later changes to the body must not reach it (kopf's reason for the deep copy)."""
    raw = copy.deepcopy(INFERENCE_MODEL)
    essence = LeanDiffBaseStorage(prefix=KOPF_PREFIX, key=KEY).build(body=kopf.Body(raw))
    raw["spec"]["model"]["file"] = "b.tflite"
    raw["metadata"]["annotations"]["korall.io/requested-by"] = "bob"
    assert essence["spec"]["model"]["file"] == "a.tflite"
    assert essence["metadata"]["annotations"]["korall.io/requested-by"] == "alice"


def test_configure_installs_korall_storages() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, OperatorSettings())
    assert isinstance(settings.persistence.diffbase_storage, LeanDiffBaseStorage)
    assert settings.persistence.finalizer == f"{KOPF_PREFIX}/finalizer"
