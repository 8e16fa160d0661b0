"""Names, labels, ownership and the pod-template digest of the child objects (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from korall_contract import API_GROUP, API_VERSION

SPEC_HASH_ANNOTATION = f"{API_GROUP}/spec-hash"
MODEL_ANNOTATION = f"{API_GROUP}/model"
MODEL_SHA256_ANNOTATION = f"{API_GROUP}/model-sha256"
INFERENCE_MODEL_LABEL = f"{API_GROUP}/inference-model"
STAGE_LABEL = f"{API_GROUP}/stage"
CAPTURE_PROFILE_LABEL = f"{API_GROUP}/capture-profile"
MANAGED_BY = "korall-operator"
PART_OF = "korall"

Manifest = dict[str, Any]


def child_name(name: str, component: str) -> str:
    """`<cr>-<component>`, kept a valid DNS-1035 label (<= 63 chars, as a Service name must be).

    Long CR names, and names a DNS-1035 label cannot hold (a leading digit, a dot: CR names may have dots), are
    cut or changed and suffixed with a digest of the full name, so two CR names never give the same child name.
    """
    full = f"{name}-{component}"
    if len(full) <= 63 and full[0].isalpha() and "." not in full:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    head = name if name[0].isalpha() else f"k{name}"
    keep = 63 - len(component) - len(digest) - 2
    return f"{head[:keep].rstrip('-.')}-{component}-{digest}".replace(".", "-")


def label_value(name: str) -> str:
    """A CR name as a label value, which may hold 63 characters (a CR name up to 253).

    Long names are cut and suffixed with a digest of the full name, so two long names never share a value.
    """
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-.')}-{digest}"


def selector_labels(name: str, component: str) -> dict[str, str]:
    """The immutable Deployment selector: which CR and which component. Never includes a version."""
    return {
        "app.kubernetes.io/name": f"korall-{component}",
        "app.kubernetes.io/instance": label_value(name),
    }


def workload_labels(name: str, component: str, image: str, extra: Mapping[str, str]) -> dict[str, str]:
    version = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    return {
        **selector_labels(name, component),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": version[:63],
        **extra,
    }


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to a CR body, so that Kubernetes' garbage collector cascades its deletion."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_metadata(
    name: str, namespace: str, labels: dict[str, str], owner: Mapping[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return meta


def spec_hash(*parts: Any) -> str:
    """A short, stable digest of JSON-able parts (key order does not matter). Used on the pod template."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stamp(template: Manifest) -> Manifest:
    """Put the digest of the pod template (without the digest itself) on the template's annotations."""
    annotations = template["metadata"].setdefault("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    annotations[SPEC_HASH_ANNOTATION] = spec_hash(template)
    return template


def pod_template_hash(deployment: Mapping[str, Any]) -> str | None:
    """The spec-hash a Deployment's pod template carries (None for a Deployment korall did not build)."""
    annotations = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    value = annotations.get(SPEC_HASH_ANNOTATION)
    return str(value) if value is not None else None
