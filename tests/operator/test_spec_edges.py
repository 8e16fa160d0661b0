"""Specs at the edges of what the CRDs admit reach the pods, handled once.

- Text outside the Basic Multilingual Plane (an emoji) in a free-text field. `json.dumps` writes such a character
  as a surrogate-pair escape (`\\ud83c\\udfa5`) unless told otherwise, and the API server's YAML decoder, which
  reads server-side apply (`application/apply-patch+yaml`), refuses surrogate escapes ("found invalid Unicode
  character escape code"): every child of a spec holding one was refused (ChildRejected). The operator's client
  sends UTF-8 with every verb. The real API server is the judge (the emulator's JSON decoder takes either form).
- The largest spec: kopf records the spec it handled in an annotation of the CR, and the API server takes at most
  256 KB of annotations. Every map and string of the specs is bounded now (the CRD refuses a 2 800-label
  nodeSelector: tests/realcluster/test_admission.py); the largest spec admitted is handled and served.
"""

from __future__ import annotations

import secrets
from typing import Any

from cluster_helpers import API, Cluster, ClusterClient, cond, eventually, get_im
from crd_cases import LARGEST_NODE_SELECTOR, LARGEST_RESOURCES, SHA
from korall_contract import EventsEnv, VisionEnv
from korall_operator.handlers.lifecycle import KOPF_PREFIX
from korall_operator.manifests import MODEL_ANNOTATION, child_name

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
CAMERA = "rtsp://cam/🎥"
TOPICS = "ü/🔊"
MODEL_URL = "https://models.example/ключ/🎥.tflite"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def create(kube: ClusterClient, ns: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}
    await kube.create(API, f"{kind.lower()}s", ns, body)


async def test_every_verb_of_the_client_keeps_text_outside_the_bmp(cluster: Cluster, kube: ClusterClient) -> None:
    """apply (YAML on the server), create and merge patches (JSON), and a status patch: each reads back equal."""
    ns, name = cluster.namespace, _name("text")
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "annotations": {"korall.io/text": CAMERA}},
        "data": {"source": CAMERA},
    }
    applied = await kube.apply(manifest)
    assert (applied["data"], applied["metadata"]["annotations"]["korall.io/text"]) == ({"source": CAMERA}, CAMERA)

    await kube.create("v1", "configmaps", ns, {"metadata": {"name": f"{name}-2"}, "data": {"url": MODEL_URL}})
    await kube.merge_patch("v1", "configmaps", ns, f"{name}-2", {"data": {"topics": TOPICS}})
    stored = await kube.get("v1", "configmaps", ns, f"{name}-2")
    assert stored is not None and stored["data"] == {"url": MODEL_URL, "topics": TOPICS}

    # A status patch: a Service's conditions (no controller writes those of a ClusterIP Service).
    service = {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}
    await kube.create("v1", "services", ns, service)
    condition = {
        "type": "Probe",
        "status": "True",
        "reason": "Text",
        "message": f"{CAMERA} {TOPICS}",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    await kube.merge_patch_status("v1", "services", ns, name, {"conditions": [condition]})
    stored = await kube.get("v1", "services", ns, name)
    assert stored is not None and stored["status"]["conditions"][0]["message"] == f"{CAMERA} {TOPICS}"


async def test_a_camera_source_and_a_model_url_with_an_emoji_reach_the_pod(
    cluster: Cluster, kube: ClusterClient, operator: Any
) -> None:
    ns, camera, name = cluster.namespace, _name("cam"), _name("im")
    profile = {"type": "video", "video": {"source": CAMERA}}
    await create(kube, ns, "CaptureProfile", camera, profile)
    spec = {"model": {"url": MODEL_URL, "sha256": "a" * 64}, "captureProfileRef": {"name": camera}}
    await create(kube, ns, "InferenceModel", name, spec)

    async def deployment() -> dict[str, Any]:
        got = await kube.get("apps/v1", "deployments", ns, child_name(name, "vision"))
        assert got is not None, "no vision Deployment"
        return got

    template = (await eventually(deployment, timeout=30))["spec"]["template"]
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    assert env[VisionEnv.CAPTURE_SOURCE] == CAMERA
    assert template["metadata"]["annotations"][MODEL_ANNOTATION] == MODEL_URL

    async def served() -> None:
        im = await get_im(kube, ns, name)
        assert (im.get("status") or {}).get("observedGeneration") == 1, im.get("status")
        assert "lastFailure" not in im["status"] and cond(im, "Degraded")["status"] == "False", im["status"]

    await eventually(served, timeout=30)


async def test_an_audio_topic_prefix_with_an_emoji_reaches_the_pod(
    cluster: Cluster, kube: ClusterClient, operator: Any
) -> None:
    ns, name = cluster.namespace, _name("mic")
    events = {"mqtt": {"url": "mqtt://broker", "topicPrefix": TOPICS}}
    await create(kube, ns, "CaptureProfile", name, {"type": "audio", "device": "hw:1,0", "audio": {}, "events": events})

    async def deployment() -> dict[str, Any]:
        got = await kube.get("apps/v1", "deployments", ns, child_name(name, "audio"))
        assert got is not None, "no audio Deployment"
        return got

    container = (await eventually(deployment, timeout=30))["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in container["env"]}[EventsEnv.TOPIC_PREFIX] == TOPICS


def longest(head: str, tail: str, length: int) -> str:
    return head + "x" * (length - len(head) - len(tail)) + tail


async def test_the_largest_spec_the_crds_admit_is_handled_once_and_served(
    cluster: Cluster, kube: ClusterClient, operator: Any
) -> None:
    ns, name = cluster.namespace, _name("big")
    url = longest("https://models.example/", ".tflite", 2048)
    spec = {
        "model": {"url": url, "sha256": SHA},
        "nodeSelector": LARGEST_NODE_SELECTOR,
        "resources": {"requests": LARGEST_RESOURCES, "limits": LARGEST_RESOURCES},
        "validation": {"goldenSet": {"url": longest("https://golden.example/", ".tar", 2048), "sha256": SHA}},
        "events": {"mqtt": {"url": longest("mqtt://", "b", 512), "topicPrefix": "t" * 128,
                            "credentialsSecret": "c" * 253, "tlsSecret": "t" * 253}},
        "auth": {"tokenSecretRef": {"name": "a" * 253}},
    }  # fmt: skip
    await create(kube, ns, "InferenceModel", name, spec)

    async def handled() -> dict[str, Any]:
        im = await get_im(kube, ns, name)
        assert (im.get("status") or {}).get("observedGeneration") == 1, im.get("status")
        assert f"{KOPF_PREFIX}/last-handled-configuration" in (im["metadata"].get("annotations") or {})
        return im

    im = await eventually(handled, timeout=30)
    assert len(im["metadata"]["annotations"][f"{KOPF_PREFIX}/last-handled-configuration"]) > 40_000
    # No failure of the spec or its children. On the real tier the scheduler may already have refused the pod (no
    # node has those 64 labels and those resources): that is the pod's failure, reported as such.
    assert (im["status"].get("lastFailure") or {}).get("reason") in (None, "Unschedulable"), im["status"]
    deployment = await kube.get("apps/v1", "deployments", ns, child_name(name, "vision"))
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"].items() >= LARGEST_NODE_SELECTOR.items()
    requests = pod["containers"][0]["resources"]["requests"]
    assert {k: str(v) for k, v in requests.items()} == {k: str(v) for k, v in LARGEST_RESOURCES.items()}


async def test_a_large_note_of_the_users_own_is_not_recorded_again_by_kopf(
    cluster: Cluster, kube: ClusterClient, operator: Any
) -> None:
    """A 150 KB annotation of a team's own (the API server takes 256 KB of annotations per object): kopf's record
    of the handled CR holds only korall's labels and annotations, so it still fits beside the note. Recorded again
    there, the note made the record too large to write, and kopf retried the CR for ever (on the real tier; the
    emulator checks no size, so there the record is read)."""
    ns, name = cluster.namespace, _name("noted")
    note = "n" * 150_000
    body = {
        "apiVersion": API,
        "kind": "InferenceModel",
        "metadata": {"name": name, "annotations": {"example.com/notes": note}, "labels": {"team": "yard"}},
        "spec": {"model": {"file": CPU_MODEL}},
    }
    await kube.create(API, "inferencemodels", ns, body)

    async def recorded() -> str:
        im = await get_im(kube, ns, name)
        assert (im.get("status") or {}).get("observedGeneration") == 1, im.get("status")
        record = (im["metadata"].get("annotations") or {}).get(f"{KOPF_PREFIX}/last-handled-configuration")
        assert record is not None, "kopf has not recorded the handled spec"
        return str(record)

    record = await eventually(recorded, timeout=30)
    assert CPU_MODEL in record and note not in record and "team" not in record
    assert await kube.get("apps/v1", "deployments", ns, child_name(name, "vision")) is not None
