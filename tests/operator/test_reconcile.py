"""The operator, run for real by kopf, against the Kubernetes API (kmock emulator, or a real cluster).

Each test creates its own InferenceModel (or CaptureProfile) in the module's namespace and polls with a deadline
until the operator has done its part. The emulator runs no controllers: where a test needs a Deployment to
become ready or to fail, it writes the Deployment's status itself (emulator only). Deletion cascades through the
emulator's small garbage collector (emulator.py), or through the real one on a real cluster.

Not covered here: "TPU requested with no TPU resource configured" needs an operator started with
KORALL_TPU_RESOURCE="" (one operator per module); the builders' tests cover that refusal (test_manifests.py).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
from cluster_helpers import API, Cluster, ClusterClient, cond, emulator_only, eventually, get_im, has_event
from korall_contract import VisionEnv
from korall_operator.manifests import SPEC_HASH_ANNOTATION, child_name

pytestmark = pytest.mark.usefixtures("operator")

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def inference_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": {"model": {"file": CPU_MODEL}, **spec},
    }


def video_profile(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "CaptureProfile",
        "metadata": {"name": name},
        "spec": {"type": "video", "device": "/dev/video0", "video": {"width": 640, "height": 480, "fps": 15}},
    }


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}  # not valueFrom


def template_hash(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION])


async def vision_deployment(kube: ClusterClient, ns: str, name: str) -> dict[str, Any]:
    deployment = await kube.get("apps/v1", "deployments", ns, child_name(name, "vision"))
    assert deployment is not None, "no vision Deployment yet"
    return deployment


async def vision_service(kube: ClusterClient, ns: str, name: str) -> dict[str, Any]:
    """Applied beside the Deployment (not before it), the Service may be stored a moment after it."""
    service = await kube.get("v1", "services", ns, child_name(name, "vision"))
    assert service is not None, "no vision Service yet"
    return service


async def observed(kube: ClusterClient, ns: str, name: str, generation: int | None = None) -> dict[str, Any]:
    """The InferenceModel once the operator has reconciled its current (or the given) generation."""
    im = await get_im(kube, ns, name)
    want = generation or im["metadata"]["generation"]
    assert (im.get("status") or {}).get("observedGeneration") == want, im.get("status")
    return im


async def test_create_gives_tpu_pinned_deployment_service_and_status(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, _name("usb")
    body = inference_model(name, model={"file": TPU_MODEL}, accelerator="edgetpu", tpuInterface="usb")
    created = await kube.create(API, "inferencemodels", ns, body)

    deployment = await eventually(lambda: vision_deployment(kube, ns, name))
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["coral.ai/tpu"] == "1"  # a quantity: the API server says "1"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["usb"]
    devices = [v for v in pod["volumes"] if v.get("hostPath", {}).get("path", "").startswith("/dev/")]
    assert not devices  # the device plugin grants the TPU: no hostPath of a device
    assert "privileged" not in container["securityContext"]
    assert env_of(deployment)[VisionEnv.MODEL_PATH].endswith(TPU_MODEL)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # a TPU is exclusive: no surge pod
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "InferenceModel",
        name,
        created["metadata"]["uid"],
        True,
    )
    service = await eventually(lambda: vision_service(kube, ns, name))
    assert service["spec"]["ports"][0]["port"] == 5052

    im = await eventually(lambda: observed(kube, ns, name))
    assert im["status"]["specHash"] == template_hash(deployment)
    assert cond(im, "Progressing")["status"] == "True" or cond(im, "Ready")["status"] == "True"
    assert cond(im, "Degraded")["status"] == "False"
    await eventually(lambda: has_event(kube, ns, name, "Created"))


async def test_model_change_rolls_out_and_stage_change_does_not(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, _name("roll")
    await kube.create(API, "inferencemodels", ns, inference_model(name, stage="test"))
    first = await eventually(lambda: vision_deployment(kube, ns, name))
    await eventually(lambda: observed(kube, ns, name))

    # The stage is not a pod field: the pod template (and so its hash) must not change, nothing rolls out.
    patched = await kube.merge_patch(API, "inferencemodels", ns, name, {"spec": {"stage": "demo"}})
    await eventually(lambda: observed(kube, ns, name, patched["metadata"]["generation"]))
    same = await vision_deployment(kube, ns, name)
    assert template_hash(same) == template_hash(first)
    assert same["spec"]["template"] == first["spec"]["template"]

    # A model change is a pod change: a new template, hence a new hash, hence a Kubernetes rollout.
    change = {"spec": {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu"}}
    patched = await kube.merge_patch(API, "inferencemodels", ns, name, change)
    im = await eventually(lambda: observed(kube, ns, name, patched["metadata"]["generation"]))
    rolled = await vision_deployment(kube, ns, name)
    assert template_hash(rolled) != template_hash(first)
    assert env_of(rolled)[VisionEnv.MODEL_PATH].endswith(TPU_MODEL)
    assert im["status"]["specHash"] == template_hash(rolled)
    await eventually(lambda: has_event(kube, ns, name, "RollingOut"))


async def _write_deployment_status(kube: ClusterClient, ns: str, deployment: dict[str, Any], **status: Any) -> None:
    """Play the Deployment controller (the emulator has none)."""
    await kube.merge_patch_status("apps/v1", "deployments", ns, deployment["metadata"]["name"], status)


async def test_ready_deployment_gives_ready_condition(cluster: Cluster, kube: ClusterClient) -> None:
    emulator_only(cluster, "the test writes the Deployment status that a real Deployment controller owns")
    ns, name = cluster.namespace, _name("ready")
    await kube.create(API, "inferencemodels", ns, inference_model(name, replicas=2))
    deployment = await eventually(lambda: vision_deployment(kube, ns, name))
    im = await eventually(lambda: observed(kube, ns, name))
    assert cond(im, "Ready")["status"] == "False"
    assert "activeModel" not in im["status"]  # nothing runs yet

    generation = deployment["metadata"]["generation"]
    await _write_deployment_status(
        kube, ns, deployment, observedGeneration=generation, replicas=2, updatedReplicas=2, readyReplicas=1
    )

    async def progressing() -> None:
        got = await get_im(kube, ns, name)
        assert got["status"].get("readyReplicas") == 1
        assert cond(got, "Progressing")["status"] == "True" and cond(got, "Ready")["status"] == "False"

    await eventually(progressing)

    await _write_deployment_status(
        kube, ns, deployment, observedGeneration=generation, replicas=2, updatedReplicas=2, readyReplicas=2
    )

    async def ready() -> dict[str, Any]:
        got = await get_im(kube, ns, name)
        assert cond(got, "Ready")["status"] == "True", got["status"]
        return got

    im = await eventually(ready)
    assert im["status"]["readyReplicas"] == 2
    assert im["status"]["activeModel"] == CPU_MODEL
    assert cond(im, "Progressing")["status"] == "False"
    assert cond(im, "Ready")["reason"] == "Available"
    await eventually(lambda: has_event(kube, ns, name, "RolloutComplete"))


async def test_zero_replicas_is_ready_and_says_no_pod_runs(cluster: Cluster, kube: ClusterClient) -> None:
    """On the real tier the Deployment controller observes the Deployment of 0 replicas; on the emulator the test
    plays it."""
    ns, name = cluster.namespace, _name("zero")
    await kube.create(API, "inferencemodels", ns, inference_model(name, replicas=0))
    deployment = await eventually(lambda: vision_deployment(kube, ns, name))
    assert deployment["spec"]["replicas"] == 0
    if cluster.is_emulated:
        await _write_deployment_status(kube, ns, deployment, observedGeneration=deployment["metadata"]["generation"])

    async def scaled_to_zero() -> dict[str, Any]:
        got = await get_im(kube, ns, name)
        assert cond(got, "Ready")["status"] == "True", got.get("status")
        return got

    im = await eventually(scaled_to_zero, timeout=30)
    assert cond(im, "Ready")["reason"] == "ScaledToZero"
    assert cond(im, "Ready")["message"].startswith("replicas is 0: no pod runs"), cond(im, "Ready")
    assert cond(im, "Degraded")["status"] == "False" and im["status"]["readyReplicas"] == 0


async def test_failed_rollout_gives_degraded(cluster: Cluster, kube: ClusterClient) -> None:
    emulator_only(cluster, "the test writes a ProgressDeadlineExceeded Deployment condition")
    ns, name = cluster.namespace, _name("stuck")
    await kube.create(API, "inferencemodels", ns, inference_model(name))
    deployment = await eventually(lambda: vision_deployment(kube, ns, name))
    await eventually(lambda: observed(kube, ns, name))
    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": f'ReplicaSet "{name}-vision-5d8f" has timed out progressing.',
    }
    await _write_deployment_status(
        kube, ns, deployment, observedGeneration=deployment["metadata"]["generation"], conditions=[stuck]
    )

    async def degraded() -> dict[str, Any]:
        got = await get_im(kube, ns, name)
        assert cond(got, "Degraded")["status"] == "True", got["status"]
        return got

    im = await eventually(degraded)
    assert cond(im, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert im["status"]["lastFailure"]["reason"] == "ProgressDeadlineExceeded"
    assert "timed out progressing" in im["status"]["lastFailure"]["message"]
    await eventually(lambda: has_event(kube, ns, name, "ProgressDeadlineExceeded", "Warning"))


async def _degraded_with(kube: ClusterClient, ns: str, name: str, reason: str) -> dict[str, Any]:
    im = await observed(kube, ns, name)
    degraded = cond(im, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", reason), im["status"]
    return im


async def _settled(kube: ClusterClient, ns: str, name: str) -> None:
    """kopf keeps no retry state for the handler: it finished (no storm of retries is scheduled)."""
    im = await get_im(kube, ns, name)
    progress = [k for k in (im["metadata"].get("annotations") or {}) if "reconcile_inference_model" in k]
    assert not progress, f"kopf still tracks retries: {progress}"


@pytest.mark.parametrize(
    ("bad", "reason", "fix", "in_message"),
    [
        pytest.param(
            {"model": {"file": "yolo_v99.tflite"}},
            "ModelNotInImage",
            {"model": {"file": CPU_MODEL}},
            "yolo_v99.tflite",
            id="model-not-in-image",
        ),
        pytest.param(
            {"accelerator": "edgetpu"},  # the CPU model cannot run on a TPU
            "ModelNotCompiledForEdgeTPU",
            {"accelerator": "cpu"},
            "Edge TPU",
            id="cpu-model-on-tpu",
        ),
        pytest.param(  # the TPU interface (default usb) the operator requires against the model's nodeSelector
            {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "nodeSelector": {"korall.io/tpu": "pci"}},
            "NodeSelectorConflict",  # the scheduler's Unschedulable, on a real cluster, before it was checked
            {"tpuInterface": "pci"},
            "the InferenceModel's nodeSelector requires 'pci', but tpuInterface usb (the default) requires 'usb'",
            id="tpu-interface-against-node-selector",
        ),
        pytest.param(
            {"scoreThreshold": 7, "topK": 0},
            "InvalidSpec",
            {"scoreThreshold": 0.4, "topK": 5},
            "scoreThreshold",
            id="invalid-values",
        ),
    ],
)
async def test_bad_spec_degrades_then_fix_recovers(
    cluster: Cluster, kube: ClusterClient, bad: dict[str, Any], reason: str, fix: dict[str, Any], in_message: str
) -> None:
    if reason == "InvalidSpec":
        emulator_only(cluster, "a real API server rejects out-of-range values at admission (CRD schema)")
    ns, name = cluster.namespace, _name("bad")
    await kube.create(API, "inferencemodels", ns, inference_model(name, **bad))

    im = await eventually(lambda: _degraded_with(kube, ns, name, reason))
    assert in_message in cond(im, "Degraded")["message"]
    assert cond(im, "Ready")["status"] == "False"
    assert im["status"]["lastFailure"]["reason"] == reason
    warning = await eventually(lambda: has_event(kube, ns, name, reason, "Warning"))
    assert in_message in warning["message"]
    await eventually(lambda: _settled(kube, ns, name))
    assert await kube.get("apps/v1", "deployments", ns, child_name(name, "vision")) is None

    patched = await kube.merge_patch(API, "inferencemodels", ns, name, {"spec": fix})
    await eventually(lambda: vision_deployment(kube, ns, name))
    im = await eventually(lambda: observed(kube, ns, name, patched["metadata"]["generation"]))
    assert cond(im, "Degraded")["status"] == "False"
    assert im["status"]["lastFailure"]["reason"] == reason  # kept as a record
    await eventually(lambda: has_event(kube, ns, name, "Recovered"))


async def test_missing_capture_profile_recovers_when_it_appears(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name, profile = cluster.namespace, _name("cam"), _name("webcam")
    await kube.create(API, "inferencemodels", ns, inference_model(name, captureProfileRef={"name": profile}))

    im = await eventually(lambda: _degraded_with(kube, ns, name, "CaptureProfileNotFound"))
    assert profile in cond(im, "Degraded")["message"]
    await eventually(lambda: has_event(kube, ns, name, "CaptureProfileNotFound", "Warning"))
    await eventually(lambda: _settled(kube, ns, name))

    # No restart, no spec change of the model: creating the profile is enough.
    await kube.create(API, "captureprofiles", ns, video_profile(profile))
    deployment = await eventually(lambda: vision_deployment(kube, ns, name), timeout=20)
    assert env_of(deployment)[VisionEnv.CAPTURE_SOURCE] == "/dev/video0"
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["korall.io/video0"] == "1"  # the camera, one pod at a time

    async def healthy() -> None:
        got = await get_im(kube, ns, name)
        assert cond(got, "Degraded")["status"] == "False", got["status"]

    await eventually(healthy)

    # A camera change is a pod change of every model that uses the profile.
    await kube.merge_patch(API, "captureprofiles", ns, profile, {"spec": {"video": {"fps": 5}}})

    async def refreshed() -> None:
        got = await vision_deployment(kube, ns, name)
        assert env_of(got)[VisionEnv.CAPTURE_FPS] == "5"
        assert template_hash(got) != template_hash(deployment)

    await eventually(refreshed)

    # And a deleted profile is reported again (the running pods stay: nothing better to roll out).
    await kube.delete(API, "captureprofiles", ns, profile)

    async def lost() -> None:
        got = await get_im(kube, ns, name)
        degraded = cond(got, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "CaptureProfileNotFound"), got["status"]

    await eventually(lost)
    assert await kube.get("apps/v1", "deployments", ns, child_name(name, "vision")) is not None


async def test_audio_capture_profile_gets_its_own_deployment(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, _name("mic")
    profile = {
        "apiVersion": API,
        "kind": "CaptureProfile",
        "metadata": {"name": name},
        "spec": {"type": "audio", "device": "hw:1,0", "audio": {"sampleRate": 16000, "chunkSeconds": 1.0}},
    }
    await kube.create(API, "captureprofiles", ns, profile)

    async def audio() -> dict[str, Any]:
        got = await kube.get("apps/v1", "deployments", ns, child_name(name, "audio"))
        assert got is not None
        return got

    deployment = await eventually(audio)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"korall.io/snd": "1"}  # the node's microphone
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "CaptureProfile"

    # A profile that becomes a camera no longer has an audio Deployment.
    to_video = {"type": "video", "device": "/dev/video2", "audio": None, "video": {"width": 640, "height": 480}}
    await kube.merge_patch(API, "captureprofiles", ns, name, {"spec": to_video})

    async def audio_gone() -> None:
        for api_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
            assert await kube.get(api_version, plural, ns, child_name(name, "audio")) is None

    await eventually(audio_gone)
    await eventually(lambda: has_event(kube, ns, name, "AudioRemoved"))


async def test_a_profile_that_becomes_video_drops_its_audio_status(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, _name("mic2cam")
    spec = {"type": "audio", "device": "hw:1,0", "audio": {}}
    await kube.create(
        API,
        "captureprofiles",
        ns,
        {"apiVersion": API, "kind": "CaptureProfile", "metadata": {"name": name}, "spec": spec},
    )

    async def reconciled(generation: int) -> dict[str, Any]:
        got = await kube.get(API, "captureprofiles", ns, name)
        assert got is not None and (got.get("status") or {}).get("observedGeneration") == generation, got
        return got

    audio = await eventually(lambda: reconciled(1))
    assert audio["status"]["replicas"] == 1

    to_video = {"type": "video", "device": "/dev/video2", "audio": None, "video": {}}
    patched = await kube.merge_patch(API, "captureprofiles", ns, name, {"spec": to_video})
    video = await eventually(lambda: reconciled(patched["metadata"]["generation"]))
    assert not {"replicas", "readyReplicas", "updatedReplicas"} & set(video["status"]), video["status"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in video["status"]["conditions"]}
    assert conditions == {
        "Ready": ("True", "NoWorkload"),
        "Progressing": ("False", "NoWorkload"),
        "Degraded": ("False", "AsExpected"),
    }


async def test_delete_cascades_to_children(
    cluster: Cluster, kube: ClusterClient, request: pytest.FixtureRequest
) -> None:
    if not cluster.is_emulated:
        request.getfixturevalue("garbage_collection")  # the real collector must know the CRDs first
    ns, name = cluster.namespace, _name("gone")
    created = await kube.create(API, "inferencemodels", ns, inference_model(name))
    deployment = await eventually(lambda: vision_deployment(kube, ns, name))
    service = await eventually(lambda: vision_service(kube, ns, name))
    for child in (deployment, service):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == created["metadata"]["uid"] and ref["controller"] and ref["blockOwnerDeletion"]
    await eventually(lambda: observed(kube, ns, name))
    im = await get_im(kube, ns, name)
    assert not im["metadata"].get("finalizers"), "no finalizer: deletion must not wait for the operator"

    await kube.delete(API, "inferencemodels", ns, name)

    async def gone() -> None:
        for api_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
            assert await kube.get(api_version, plural, ns, child_name(name, "vision")) is None

    await eventually(gone, timeout=30)


async def test_operator_watches_again_after_the_server_ends_its_watches(cluster: Cluster, kube: ClusterClient) -> None:
    """What a server-side watch timeout (KORALL_WATCH_SERVER_TIMEOUT_S) or an API server restart looks like."""
    emulator_only(cluster, "the test ends the API server's watch streams")
    assert cluster.emulated is not None
    emulator = cluster.emulated.emulator

    def watches() -> list[Any]:
        return [
            r
            for r in list(emulator._requests)
            if r.params.get("watch") == "true"
            and r.url.path.endswith(f"/namespaces/{cluster.namespace}/inferencemodels")
        ]

    before = len(watches())
    cluster.emulated.call(emulator.end_watches())
    ns, name = cluster.namespace, _name("rewatch")
    await kube.create(API, "inferencemodels", ns, inference_model(name))
    await eventually(lambda: vision_deployment(kube, ns, name))
    renewed = watches()[before:]
    assert renewed, "the operator did not watch again"
    assert all(r.params.get("resourceVersion") for r in renewed), "a renewed watch must resume, not start over"


async def test_deleted_child_deployment_is_applied_again(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, _name("heal")
    await kube.create(API, "inferencemodels", ns, inference_model(name))
    first = await eventually(lambda: vision_deployment(kube, ns, name))

    await kube.delete("apps/v1", "deployments", ns, first["metadata"]["name"])

    async def recreated() -> dict[str, Any]:
        got = await vision_deployment(kube, ns, name)
        assert got["metadata"]["uid"] != first["metadata"]["uid"]
        return got

    again = await eventually(recreated)
    assert template_hash(again) == template_hash(first)


async def test_edgetpu_without_a_tpu_resource_is_refused(cluster: Cluster, kube: ClusterClient) -> None:
    """A second operator, configured with no TPU resource (KORALL_TPU_RESOURCE=""), in a namespace of its own."""
    from kopf.testing import KopfRunner

    ns, name = f"{cluster.namespace}-notpu", _name("tpu")
    await kube.create("v1", "namespaces", None, {"metadata": {"name": ns}})
    saved = os.environ.get("KORALL_TPU_RESOURCE")
    os.environ["KORALL_TPU_RESOURCE"] = ""
    args = ["run", "--standalone", "--namespace", ns, "-m", "korall_operator.handlers"]
    try:
        with KopfRunner(args, timeout=30):
            body = inference_model(name, model={"file": TPU_MODEL}, accelerator="edgetpu")
            await kube.create(API, "inferencemodels", ns, body)
            im = await eventually(lambda: _degraded_with(kube, ns, name, "TPUResourceNotConfigured"))
            assert "KORALL_TPU_RESOURCE" in cond(im, "Degraded")["message"]
            await eventually(lambda: has_event(kube, ns, name, "TPUResourceNotConfigured", "Warning"))
            assert await kube.get("apps/v1", "deployments", ns, child_name(name, "vision")) is None
    finally:
        if saved is None:
            os.environ.pop("KORALL_TPU_RESOURCE", None)
        else:
            os.environ["KORALL_TPU_RESOURCE"] = saved
        await kube.delete("v1", "namespaces", None, ns)


@pytest.mark.parametrize("kind", ["InferenceModel", "CaptureProfile"])
async def test_deleted_child_service_is_applied_again(cluster: Cluster, kube: ClusterClient, kind: str) -> None:
    """A Service deleted by hand comes back (its parent's status said nothing was wrong: only a watch of the
    Services, or the resync loop's look at them, can notice)."""
    ns, name = cluster.namespace, _name("svc")
    if kind == "InferenceModel":
        await kube.create(API, "inferencemodels", ns, inference_model(name))
        component = "vision"
    else:
        spec = {"type": "audio", "device": "hw:1,0", "audio": {}}
        await kube.create(API, "captureprofiles", ns, {"apiVersion": API, "kind": kind, "metadata": {"name": name},
                                                       "spec": spec})  # fmt: skip
        component = "audio"
    child = child_name(name, component)

    async def service() -> dict[str, Any]:
        got = await kube.get("v1", "services", ns, child)
        assert got is not None, f"no Service {child}"
        return got

    first = await eventually(service)
    await kube.delete("v1", "services", ns, child)

    async def recreated() -> dict[str, Any]:
        got = await service()
        assert got["metadata"]["uid"] != first["metadata"]["uid"]
        return got

    again = await eventually(recreated, timeout=30)
    assert again["spec"]["selector"] == first["spec"]["selector"]
    assert again["metadata"]["ownerReferences"] == first["metadata"]["ownerReferences"]
