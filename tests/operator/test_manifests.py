"""The pure manifest builders over many spec combinations: TPU over USB and PCIe, CPU, with and without a camera,
audio, and every spec the operator must refuse. No server needed: the builders are functions of their inputs.

Every manifest is also validated against the Kubernetes OpenAPI schema (kubernetes-validate, strict: unknown
fields fail), so a typo in a field name cannot reach a cluster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from korall_contract import AUDIO_PORT, MODEL_HOLD_MODULE, VISION_PORT, AudioEnv, HttpEnv, VisionEnv, env_names
from korall_operator.manifests import (
    SPEC_HASH_ANNOTATION,
    STAGE_LABEL,
    build_audio_deployment,
    build_audio_service,
    build_vision_deployment,
    build_vision_service,
    child_name,
    label_value,
    pod_template_hash,
    spec_hash,
)
from korall_operator.settings import OperatorSettings
from korall_operator.specs import (
    CaptureProfileSpec,
    InferenceModelSpec,
    SpecError,
    parse_capture_profile,
    parse_inference_model,
)

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.34.0"  # a version kubernetes-validate ships; the chart needs >= 1.30
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
OWNER: dict[str, Any] = {
    "apiVersion": "korall.io/v1alpha1",
    "kind": "InferenceModel",
    "metadata": {"name": "front", "uid": "0b7c6f4e-1111-2222-3333-444455556666"},
}
ACCESS_MODES = ("device-plugin", "privileged")
UNPRIVILEGED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
PRIVILEGED = {"privileged": True, "readOnlyRootFilesystem": True}
VISION_ENV_NAMES = set(env_names(VisionEnv)) | set(env_names(HttpEnv))
AUDIO_ENV_NAMES = set(env_names(AudioEnv)) | set(env_names(HttpEnv))


def settings(**overrides: Any) -> OperatorSettings:
    return OperatorSettings(**overrides)


def tpu_model(interface: str = "usb", **extra: Any) -> InferenceModelSpec:
    return parse_inference_model(
        {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "tpuInterface": interface, **extra}
    )


def cpu_model(**extra: Any) -> InferenceModelSpec:
    return parse_inference_model({"model": {"file": CPU_MODEL}, "accelerator": "cpu", **extra})


def camera(**extra: Any) -> CaptureProfileSpec:
    spec = {"type": "video", "device": "/dev/video0", "video": {}, **extra}
    return parse_capture_profile(spec)


def microphone(device: str = "hw:1,0", **extra: Any) -> CaptureProfileSpec:
    return parse_capture_profile({"type": "audio", "device": device, "audio": {}, **extra})


def k8s_valid(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment)["env"] if "value" in e}  # not valueFrom


def host_paths(deployment: dict[str, Any]) -> dict[str, str]:
    """hostPath volumes as {path: type}, checked to be mounted at the same path in the container."""
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    out = {}
    for volume in pod(deployment)["volumes"]:
        if "hostPath" in volume:
            path = volume["hostPath"]["path"]
            assert mounts[volume["name"]] == path
            out[path] = volume["hostPath"]["type"]
    return out


def device_paths(deployment: dict[str, Any]) -> dict[str, str]:
    """The hostPath volumes of devices (under /dev/), as {path: type}: what privileged access mounts."""
    return {path: kind for path, kind in host_paths(deployment).items() if path.startswith("/dev/")}


# ---------------------------------------------------------------------------------------------- vision / TPU


def test_usb_tpu_with_camera_is_pinned_to_the_tpu_and_camera_node() -> None:
    dep = build_vision_deployment(
        "front",
        "edge",
        tpu_model("usb"),
        camera(nodeSelector={"kubernetes.io/hostname": "n1"}),
        settings(),
        owner=OWNER,
    )
    k8s_valid(dep)
    c = container(dep)
    # the device plugin grants both: one TPU, and the camera node the profile names (one pod per camera)
    assert c["resources"]["limits"] == {"coral.ai/tpu": "1", "korall.io/video0": "1"}
    assert dep["spec"]["template"]["metadata"]["annotations"]["korall.io/camera-resources"] == "korall.io/video0"
    terms = pod(dep)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # a node labelled for USB, or an unlabelled one (the coral.ai/tpu request finds the TPU nodes); never a PCIe one
    assert terms == [
        {"matchExpressions": [{"key": "korall.io/tpu", "operator": "In", "values": ["usb"]}]},
        {"matchExpressions": [{"key": "korall.io/tpu", "operator": "DoesNotExist"}]},
    ]
    assert pod(dep)["nodeSelector"] == {"kubernetes.io/hostname": "n1"}
    assert device_paths(dep) == {}  # no hostPath, no privilege: the plugin's allocation adds the device nodes
    assert c["securityContext"] == UNPRIVILEGED
    security = pod(dep)["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["supplementalGroups"] == [29, 44, 46]  # audio, video, plugdev: the groups of the device nodes
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    e = env(dep)
    assert e[VisionEnv.MODEL_PATH] == f"/models/{TPU_MODEL}"
    assert e[VisionEnv.LABELS_PATH] == "/models/coco_labels.txt"
    assert e[VisionEnv.ACCELERATOR] == "edgetpu"
    assert e[VisionEnv.EDGETPU_DEVICE] == "usb"
    assert e[VisionEnv.CAPTURE_SOURCE] == "/dev/video0"
    assert e[VisionEnv.CAPTURE_WIDTH] == "640" and e[VisionEnv.CAPTURE_PIXEL_FORMAT] == "MJPG"
    assert e[VisionEnv.PORT] == str(VISION_PORT)
    assert set(e) <= VISION_ENV_NAMES
    assert dep["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True


def test_privileged_access_mounts_the_whole_usb_bus_and_the_camera() -> None:
    dep = build_vision_deployment("front", "edge", tpu_model("usb"), camera(), settings(device_access="privileged"))
    k8s_valid(dep)
    # the whole USB bus (the accelerator re-enumerates 1a6e:089a -> 18d1:9302), and the camera's char device
    assert device_paths(dep) == {"/dev/bus/usb": "Directory", "/dev/video0": "CharDevice"}
    assert container(dep)["securityContext"] == PRIVILEGED


def test_pci_tpu_mounts_the_apex_device_only_when_privileged() -> None:
    dep = build_vision_deployment("m2", "edge", tpu_model("pci"), None, settings(device_access="privileged"))
    k8s_valid(dep)
    assert device_paths(dep) == {"/dev/apex_0": "CharDevice"}
    assert env(dep)[VisionEnv.EDGETPU_DEVICE] == "pci"
    match = pod(dep)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert match["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["pci"]
    assert VisionEnv.CAPTURE_SOURCE not in env(dep)
    assert dep["spec"]["strategy"]["type"] == "Recreate"


def test_edgetpu_without_interface_means_usb() -> None:
    spec = parse_inference_model({"model": {"file": TPU_MODEL}, "accelerator": "edgetpu"})
    assert env(build_vision_deployment("m", "ns", spec, None, settings()))[VisionEnv.EDGETPU_DEVICE] == "usb"
    dep = build_vision_deployment("m", "ns", spec, None, settings(device_access="privileged"))
    assert "/dev/bus/usb" in device_paths(dep)


def test_cpu_model_without_camera_needs_no_device_and_runs_unprivileged() -> None:
    dep = build_vision_deployment("cpu", "ns", cpu_model(), None, settings())
    k8s_valid(dep)
    p, c = pod(dep), container(dep)
    assert host_paths(dep) == {}
    assert "affinity" not in p and "nodeSelector" not in p
    assert "coral.ai/tpu" not in json.dumps(c.get("resources", {}))
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert p["automountServiceAccountToken"] is False
    # no exclusive device: a surge pod can start beside the old one, zero downtime
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert env(dep)[VisionEnv.ACCELERATOR] == "cpu"
    assert VisionEnv.EDGETPU_DEVICE not in env(dep)


def test_cpu_model_with_network_camera_needs_no_device() -> None:
    cam = parse_capture_profile({"type": "video", "video": {"source": "rtsp://cam:8554/s", "fps": 10}})
    dep = build_vision_deployment("yard", "ns", cpu_model(), cam, settings())
    k8s_valid(dep)
    assert host_paths(dep) == {}
    assert env(dep)[VisionEnv.CAPTURE_SOURCE] == "rtsp://cam:8554/s"
    assert env(dep)[VisionEnv.CAPTURE_FPS] == "10"
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"


def test_cpu_model_with_usb_camera_is_pinned_to_the_camera_node() -> None:
    cam = camera(
        nodeSelector={"kubernetes.io/hostname": "n2"}, video={"source": "v4l2src device=/dev/video0 ! appsink"}
    )
    dep = build_vision_deployment("cpu-cam", "ns", cpu_model(nodeSelector={"zone": "porch"}), cam, settings())
    k8s_valid(dep)
    assert container(dep)["resources"]["limits"] == {"korall.io/video0": "1"}
    assert pod(dep)["nodeSelector"] == {"zone": "porch", "kubernetes.io/hostname": "n2"}
    assert "affinity" not in pod(dep)
    assert env(dep)[VisionEnv.CAPTURE_SOURCE].startswith("v4l2src")  # the source override wins over the device
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # one process opens a camera at a time


@pytest.mark.parametrize(
    ("source", "opened"),
    [
        (None, ["/dev/video0"]),  # the profile's device
        ("/dev/video2", ["/dev/video2"]),  # another device: that one, not the profile's
        ("rtsp://cam.local/stream", []),  # a network camera needs no device
        ("/data/demo.avi", []),  # nor does a file
        ("v4l2src device=/dev/video1 ! videoconvert ! appsink", ["/dev/video1"]),
    ],
)
@pytest.mark.parametrize("access", ACCESS_MODES)
def test_a_camera_pod_gets_only_the_devices_its_source_opens(
    source: str | None, opened: list[str], access: str
) -> None:
    cam = camera(video={"source": source} if source else {})
    dep = build_vision_deployment("cam", "ns", cpu_model(), cam, settings(device_access=access))
    k8s_valid(dep)
    resources = [f"korall.io/video{path.removeprefix('/dev/video')}" for path in opened]
    assert container(dep).get("resources", {}).get("limits", {}) == dict.fromkeys(resources, "1")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations.get("korall.io/camera-resources", "") == ",".join(resources)
    assert device_paths(dep) == (dict.fromkeys(opened, "CharDevice") if access == "privileged" else {})
    privileged = access == "privileged" and bool(opened)
    assert container(dep)["securityContext"] == (PRIVILEGED if privileged else UNPRIVILEGED)


# ---------------------------------------------------------------------------------------------- device access

# Every device combination a workload pod can have: how its deployment is built, the extended resources it
# requests, and what privileged access mounts instead of the plugin's grant. The table test below checks the
# security context of each in both access modes.
DEVICE_COMBINATIONS: dict[str, tuple[Any, dict[str, str], dict[str, str]]] = {
    "no device": (lambda s: build_vision_deployment("m", "ns", cpu_model(), None, s), {}, {}),
    "network camera": (
        lambda s: build_vision_deployment("m", "ns", cpu_model(), camera(video={"source": "rtsp://c/s"}), s),
        {},
        {},
    ),
    "usb tpu": (
        lambda s: build_vision_deployment("m", "ns", tpu_model("usb"), None, s),
        {"coral.ai/tpu": "1"},
        {"/dev/bus/usb": "Directory"},
    ),
    "pci tpu": (
        lambda s: build_vision_deployment("m", "ns", tpu_model("pci"), None, s),
        {"coral.ai/tpu": "1"},
        {"/dev/apex_0": "CharDevice"},
    ),
    "camera": (
        lambda s: build_vision_deployment("m", "ns", cpu_model(), camera(device="/dev/video3"), s),
        {"korall.io/video3": "1"},
        {"/dev/video3": "CharDevice"},
    ),
    "usb tpu and camera": (
        lambda s: build_vision_deployment("m", "ns", tpu_model("usb"), camera(), s),
        {"coral.ai/tpu": "1", "korall.io/video0": "1"},
        {"/dev/bus/usb": "Directory", "/dev/video0": "CharDevice"},
    ),
    "pci tpu and camera": (
        lambda s: build_vision_deployment("m", "ns", tpu_model("pci"), camera(), s),
        {"coral.ai/tpu": "1", "korall.io/video0": "1"},
        {"/dev/apex_0": "CharDevice", "/dev/video0": "CharDevice"},
    ),
    "microphone": (
        lambda s: build_audio_deployment("mic", "ns", microphone("hw:1,0"), s),
        {"korall.io/snd": "1"},
        {"/dev/snd": "Directory"},
    ),
    "recorded sound": (lambda s: build_audio_deployment("wav", "ns", microphone("/data/a.wav"), s), {}, {}),
}


@pytest.mark.parametrize("access", ACCESS_MODES)
@pytest.mark.parametrize("combination", list(DEVICE_COMBINATIONS))
def test_security_context_of_every_device_combination(combination: str, access: str) -> None:
    build, limits, mounted = DEVICE_COMBINATIONS[combination]
    dep = build(settings(device_access=access))
    k8s_valid(dep)
    p, c = pod(dep), container(dep)
    device = bool(limits)
    assert c.get("resources", {}).get("limits", {}) == limits  # requested in both modes: the scheduler counts them
    if access == "device-plugin" or not device:
        # the plugin's allocation adds the device nodes and their cgroup rules: nothing privileged, nothing mounted
        assert c["securityContext"] == UNPRIVILEGED
        assert device_paths(dep) == {}
    else:
        assert c["securityContext"] == PRIVILEGED  # a hostPath alone does not open the device cgroup
        assert device_paths(dep) == mounted
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] == 10001
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["securityContext"].get("supplementalGroups") == ([29, 44, 46] if device else None)
    assert p["automountServiceAccountToken"] is False
    assert dep["spec"]["strategy"]["type"] == ("Recreate" if device else "RollingUpdate")


def test_without_a_plugin_only_the_tpu_is_requested() -> None:
    """The chart's opt-in without any plugin: privileged, and no camera or microphone resource that nobody
    advertises (the pod would wait for it forever); the TPU stays a resource (a plugin that counts them will do)."""
    bare = settings(device_access="privileged", camera_resource_prefix="", microphone_resource="")
    dep = build_vision_deployment("m", "ns", tpu_model("usb"), camera(), bare)
    assert container(dep)["resources"]["limits"] == {"coral.ai/tpu": "1"}
    assert "korall.io/camera-resources" not in dep["spec"]["template"]["metadata"]["annotations"]
    assert device_paths(dep) == {"/dev/bus/usb": "Directory", "/dev/video0": "CharDevice"}
    audio = build_audio_deployment("mic", "ns", microphone(), bare)
    assert "resources" not in container(audio) and device_paths(audio) == {"/dev/snd": "Directory"}


@pytest.mark.parametrize(
    ("device", "overrides", "reason", "in_message"),
    [
        ("/dev/v4l/by-id/usb-cam-video-index0", {}, "CameraNotSchedulable", "/dev/videoN"),
        ("/dev/video01", {}, "CameraNotSchedulable", "/dev/videoN"),
        ("/dev/video0", {"camera_resource_prefix": ""}, "CameraResourceNotConfigured", "camera.resourcePrefix"),
    ],
)
def test_a_camera_the_plugin_cannot_grant_is_refused(
    device: str, overrides: dict[str, Any], reason: str, in_message: str
) -> None:
    with pytest.raises(SpecError) as err:
        build_vision_deployment("m", "ns", cpu_model(), camera(device=device), settings(**overrides))
    assert (err.value.reason, in_message in err.value.message) == (reason, True), err.value.message
    # privileged access mounts it: the path is the profile's business
    dep = build_vision_deployment("m", "ns", cpu_model(), camera(device=device), settings(device_access="privileged"))
    assert device_paths(dep) == {device: "CharDevice"}


def test_a_microphone_the_plugin_cannot_grant_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        build_audio_deployment("mic", "ns", microphone(), settings(microphone_resource=""))
    assert err.value.reason == "MicrophoneResourceNotConfigured" and "microphone.resource" in err.value.message


def test_device_pods_can_run_as_root_where_device_nodes_are_root_only() -> None:
    dep = build_vision_deployment("m", "ns", tpu_model("pci"), None, settings(device_run_as_user=0, device_groups=[]))
    k8s_valid(dep)
    assert pod(dep)["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 0}
    # a pod without a device never does
    cpu = build_vision_deployment("c", "ns", cpu_model(), None, settings(device_run_as_user=0))
    assert cpu["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "supplementalGroups" not in cpu["spec"]["template"]["spec"]["securityContext"]


def test_configurable_tpu_resource_and_no_node_label() -> None:
    dep = build_vision_deployment(
        "m", "ns", tpu_model(), None, settings(tpu_resource="example.com/edgetpu", tpu_node_label="")
    )
    limits = container(dep)["resources"]["limits"]
    assert limits == {"example.com/edgetpu": "1"}
    assert "affinity" not in pod(dep)
    # Without the label the operator requires nothing of it: a nodeSelector on korall.io/tpu is the user's alone.
    pci_selector = tpu_model("usb", nodeSelector={"korall.io/tpu": "pci"})
    unlabelled = build_vision_deployment("m", "ns", pci_selector, None, settings(tpu_node_label=""))
    assert pod(unlabelled)["nodeSelector"] == {"korall.io/tpu": "pci"}


def test_a_node_selector_that_agrees_with_the_tpu_interface_is_kept() -> None:
    dep = build_vision_deployment("m", "ns", tpu_model("pci", nodeSelector={"korall.io/tpu": "pci"}), None, settings())
    assert pod(dep)["nodeSelector"] == {"korall.io/tpu": "pci"}  # narrower than the affinity: labelled nodes only
    assert "affinity" in pod(dep)


def test_user_resources_are_kept_and_the_tpu_limit_added() -> None:
    # a request for the TPU itself is dropped: an extended resource's request is its limit
    requests = {"cpu": "250m", "memory": "128Mi", "coral.ai/tpu": "2"}
    spec = tpu_model(resources={"requests": requests, "limits": {"memory": "384Mi"}})
    dep = build_vision_deployment("m", "ns", spec, None, settings())
    k8s_valid(dep)
    assert container(dep)["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi"},
        "limits": {"memory": "384Mi", "coral.ai/tpu": "1"},
    }


def test_probes_and_ports() -> None:
    c = container(build_vision_deployment("m", "ns", cpu_model(), None, settings()))
    assert c["ports"] == [{"name": "http", "containerPort": VISION_PORT, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_labels_and_selector() -> None:
    dep = build_vision_deployment("front", "ns", tpu_model(stage="production"), None, settings(), owner=OWNER)
    labels = dep["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "korall-vision"
    assert labels["app.kubernetes.io/instance"] == "front"
    assert labels["app.kubernetes.io/part-of"] == "korall"
    assert labels["app.kubernetes.io/managed-by"] == "korall-operator"
    assert labels["app.kubernetes.io/version"] == "0.1.0"
    assert labels[STAGE_LABEL] == "production"
    selector = dep["spec"]["selector"]["matchLabels"]
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert "app.kubernetes.io/version" not in selector  # the selector is immutable: never a version in it
    assert STAGE_LABEL not in template_labels


def test_vision_service_selects_the_vision_pods() -> None:
    dep = build_vision_deployment("front", "ns", cpu_model(), None, settings(), owner=OWNER)
    svc = build_vision_service("front", "ns", settings(), owner=OWNER)
    k8s_valid(svc)
    assert svc["metadata"]["name"] == dep["metadata"]["name"] == "front-vision"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": VISION_PORT, "targetPort": "http", "protocol": "TCP"}]
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "InferenceModel"


# ---------------------------------------------------------------------------------------------- rollout hash


def _hash(model: InferenceModelSpec, cap: CaptureProfileSpec | None = None, **kw: Any) -> str | None:
    return pod_template_hash(build_vision_deployment("m", "ns", model, cap, settings(**kw)))


@pytest.mark.parametrize(
    "changed",
    [
        {"model": {"url": "https://models.example/ssd.tflite", "sha256": "ab" * 32}},
        {"scoreThreshold": 0.6},
        {"topK": 5},
        {"tpuInterface": "pci"},
        {"nodeSelector": {"zone": "a"}},
        {"resources": {"limits": {"memory": "1Gi"}}},
        {"captureProfileRef": {"name": "cam"}},
    ],
)
def test_every_pod_affecting_change_changes_the_template_hash(changed: dict[str, Any]) -> None:
    base = {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "tpuInterface": "usb"}
    before = _hash(parse_inference_model(base))
    after = _hash(parse_inference_model({**base, **changed}))
    assert before is not None and after is not None and before != after


def test_model_switch_cpu_to_tpu_changes_the_template() -> None:
    assert _hash(cpu_model()) != _hash(tpu_model())


def test_camera_and_image_changes_change_the_hash() -> None:
    assert _hash(cpu_model(), camera()) != _hash(cpu_model(), camera(video={"fps": 30}))
    assert _hash(cpu_model()) != _hash(cpu_model(), vision_image="registry.local/korall-vision:0.2.0")


def test_replicas_and_stage_do_not_roll_pods() -> None:
    assert _hash(cpu_model()) == _hash(cpu_model(replicas=3, stage="production"))


def test_the_hash_is_the_digest_of_the_template_and_stable() -> None:
    dep = build_vision_deployment("m", "ns", cpu_model(), camera(), settings())
    again = build_vision_deployment("m", "ns", cpu_model(), camera(), settings())
    assert dep == again
    template = json.loads(json.dumps(dep["spec"]["template"]))
    stamped = template["metadata"]["annotations"].pop(SPEC_HASH_ANNOTATION)
    assert stamped == spec_hash(template)
    assert spec_hash({"a": 1, "b": 2}) == spec_hash({"b": 2, "a": 1})


# ---------------------------------------------------------------------------------------------- audio


def test_audio_profile_gets_a_microphone_pod() -> None:
    cap = microphone(nodeSelector={"kubernetes.io/hostname": "n1"}, audio={"sampleRate": 48000, "chunkSeconds": 2})
    owner = {**OWNER, "kind": "CaptureProfile"}
    dep = build_audio_deployment("hall", "edge", cap, settings(), owner=owner)
    svc = build_audio_service("hall", "edge", settings(), owner=owner)
    k8s_valid(dep)
    k8s_valid(svc)
    e = env(dep)
    assert set(e) <= AUDIO_ENV_NAMES
    assert e[AudioEnv.AUDIO_SOURCE] == "hw:1,0"
    assert e[AudioEnv.AUDIO_SAMPLE_RATE] == "48000"
    assert e[AudioEnv.AUDIO_CHUNK_S] == "2.0"
    assert e[AudioEnv.AUDIO_SILENCE_DBFS] == "-50.0" and e[AudioEnv.AUDIO_LOUD_DBFS] == "-6.0"
    assert e[AudioEnv.PORT] == str(AUDIO_PORT)
    assert container(dep)["resources"] == {"limits": {"korall.io/snd": "1"}}  # the node's microphone, granted
    assert device_paths(dep) == {}
    assert container(dep)["securityContext"] == UNPRIVILEGED
    assert pod(dep)["nodeSelector"] == {"kubernetes.io/hostname": "n1"}
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["metadata"]["name"] == svc["metadata"]["name"] == "hall-audio"
    assert container(dep)["image"].endswith("korall-audio:0.1.0")
    assert svc["spec"]["ports"][0]["port"] == AUDIO_PORT


def test_audio_from_a_wav_file_needs_no_sound_device() -> None:
    dep = build_audio_deployment("replay", "ns", microphone("/data/hall.wav"), settings(device_access="privileged"))
    k8s_valid(dep)
    assert device_paths(dep) == {}
    assert "resources" not in container(dep)
    assert pod(dep)["securityContext"]["runAsNonRoot"] is True
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"


def test_audio_builder_refuses_a_video_profile() -> None:
    with pytest.raises(SpecError) as err:
        build_audio_deployment("cam", "ns", camera(), settings())
    assert err.value.reason == "CaptureProfileWrongType"


# ---------------------------------------------------------------------------------------------- refused specs


@pytest.mark.parametrize(
    ("model", "capture", "overrides", "reason", "in_message"),
    [
        ({"model": {"file": "yolo.tflite"}}, None, {}, "ModelNotInImage", "mobilenet_ssd_v2_coco_quant_postprocess"),
        (
            {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu"},
            None,
            {"tpu_resource": ""},
            "TPUResourceNotConfigured",
            "KORALL_TPU_RESOURCE",
        ),
        (
            {"model": {"file": CPU_MODEL}, "captureProfileRef": {"name": "mic"}},
            "audio",
            {},
            "CaptureProfileWrongType",
            "'mic'",
        ),
        ({"model": {"file": CPU_MODEL}, "accelerator": "edgetpu"}, None, {}, "ModelNotCompiledForEdgeTPU", TPU_MODEL),
        ({"model": {"file": TPU_MODEL}, "accelerator": "cpu"}, None, {}, "ModelNeedsEdgeTPU", CPU_MODEL),
        ({"model": {"file": CPU_MODEL}, "labels": "imagenet.txt"}, None, {}, "LabelsNotInImage", "coco_labels.txt"),
        ({"model": {"file": CPU_MODEL, "sha256": "b" * 64}}, None, {}, "ModelChecksumMismatch", "7046f31a"),
        (
            {"model": {"file": CPU_MODEL}, "nodeSelector": {"kubernetes.io/hostname": "a"}},
            "video-on-b",
            {},
            "NodeSelectorConflict",
            "the InferenceModel's nodeSelector requires 'a', but the CaptureProfile's nodeSelector (where its camera "
            "is) requires 'b'",
        ),
        # The TPU interface the operator requires (by node affinity) against the model's own nodeSelector, and
        # against its camera's: both sides and how to fix either are named (the scheduler's Unschedulable was not).
        (
            {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "nodeSelector": {"korall.io/tpu": "pci"}},
            None,
            {},
            "NodeSelectorConflict",
            "node label 'korall.io/tpu': the InferenceModel's nodeSelector requires 'pci', but tpuInterface usb (the "
            "default) requires 'usb' (or no such label): no node can satisfy both; change or remove 'korall.io/tpu' "
            "in the InferenceModel's nodeSelector, or set the InferenceModel's tpuInterface",
        ),
        (
            {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "tpuInterface": "pci"},
            "video-on-usb-tpu",
            {"tpu_node_label": "example.com/tpu"},
            "NodeSelectorConflict",
            "requires 'usb', but tpuInterface pci requires 'pci' (or no such label)",
        ),
    ],
)
def test_specs_only_the_operator_can_refuse(
    model: dict[str, Any], capture: str | None, overrides: dict[str, Any], reason: str, in_message: str
) -> None:
    cap = None
    if capture == "audio":
        cap = microphone()
    elif capture == "video-on-b":
        cap = camera(nodeSelector={"kubernetes.io/hostname": "b"})
    elif capture == "video-on-usb-tpu":
        cap = camera(nodeSelector={"example.com/tpu": "usb"})
    with pytest.raises(SpecError) as err:
        build_vision_deployment("m", "ns", parse_inference_model(model), cap, settings(**overrides))
    assert err.value.reason == reason
    assert in_message in err.value.message
    assert str(err.value).startswith(reason)


@pytest.mark.parametrize(
    ("spec", "in_message"),
    [
        ({}, "model"),
        ({"model": {}}, "exactly one of model.file, model.url or model.s3"),
        ({"model": {"file": CPU_MODEL, "url": "https://x/m.tflite"}}, "exactly one of"),
        ({"model": {"url": "https://x/m.tflite"}}, "model.url and model.s3 require model.sha256"),
        ({"model": {"file": CPU_MODEL}, "scoreThreshold": 1.5}, "scoreThreshold"),
        ({"model": {"file": CPU_MODEL}, "topK": 0}, "topK"),
        ({"model": {"file": CPU_MODEL}, "accelerator": "gpu"}, "accelerator"),
        (
            {"model": {"file": CPU_MODEL}, "tpuInterface": "pci"},
            "tpuInterface may only be set when accelerator is edgetpu",
        ),
        ({"model": {"file": CPU_MODEL}, "stage": "prod"}, "stage"),
        ({"model": {"file": "../etc/passwd"}}, "model.file"),
        ({"model": {"file": CPU_MODEL}, "replicas": -1}, "replicas"),
        ({"model": {"file": CPU_MODEL}, "unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_inference_model_specs_are_explained(spec: dict[str, Any], in_message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_inference_model(spec)
    assert err.value.reason == "InvalidSpec"
    assert in_message in err.value.message


@pytest.mark.parametrize(
    ("spec", "in_message"),
    [
        ({"type": "video", "device": "/dev/video0"}, "type video requires a video block"),
        ({"type": "video", "video": {}}, "type video requires device, video.source or video.sourceSecretRef"),
        ({"type": "video", "device": "video0", "video": {}}, "a video device is a path under /dev/"),
        ({"type": "audio", "audio": {}}, "type audio requires device"),
        (
            {"type": "audio", "device": "hw:1,0", "video": {}, "audio": {}},
            "type audio requires an audio block and no video",
        ),
        ({"type": "audio", "device": "hw:1,0", "audio": {"chunkSeconds": 6}}, "audio.chunkSeconds"),
        ({"type": "audio", "device": "hw:1,0", "audio": {"sampleRate": 11025}}, "audio.sampleRate"),
        (
            {"type": "audio", "device": "hw:1,0", "audio": {"thresholds": {"silenceDbfs": -10, "loudDbfs": -20}}},
            "silenceDbfs must be below loudDbfs",
        ),
        ({"type": "video", "device": "/dev/video0", "video": {"pixelFormat": "H264"}}, "video.pixelFormat"),
        ({"type": "radio"}, "type"),
    ],
)
def test_invalid_capture_profile_specs_are_explained(spec: dict[str, Any], in_message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_capture_profile(spec)
    assert err.value.reason == "InvalidSpec"
    assert in_message in err.value.message


# ---------------------------------------------------------------------------------------------- names & settings


def test_child_names_stay_valid_and_distinct_for_long_names() -> None:
    long_a, long_b = "a" * 200 + "-x", "a" * 200 + "-y"
    names = {child_name(long_a, "vision"), child_name(long_b, "vision"), child_name("front", "vision")}
    assert len(names) == 3
    for name in names:
        assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()
    assert child_name("1st.cam", "audio")[0].isalpha()
    dep = build_vision_deployment("9" * 100, "ns", cpu_model(), None, settings())
    k8s_valid(dep)
    k8s_valid(build_vision_service("9" * 100, "ns", settings()))


def test_child_names_of_dotted_cr_names_are_dns_labels() -> None:
    """CR names are DNS subdomains (dots allowed); a Service name is a DNS-1035 label (no dots)."""
    label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    dotted, dashed = child_name("cam.front", "vision"), child_name("cam-front", "vision")
    assert label.match(dotted) and len(dotted) <= 63, dotted
    assert dotted != dashed
    assert build_vision_service("cam.front", "ns", settings())["metadata"]["name"] == dotted


def test_long_cr_names_give_valid_label_values() -> None:
    """A CR name may have 253 characters, a label value 63: the API server refuses a longer one."""
    value = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
    long_model, long_camera = "m" * 100, "c" * 200
    model = cpu_model(captureProfileRef={"name": long_camera})
    children = [
        build_vision_deployment(long_model, "ns", model, camera(), settings()),
        build_vision_service(long_model, "ns", settings()),
        build_audio_deployment(long_camera, "ns", microphone(), settings()),
    ]
    for child in children:
        spec = child["spec"]
        label_sets = [child["metadata"]["labels"], spec.get("selector", {}).get("matchLabels", spec.get("selector"))]
        if "template" in spec:
            label_sets.append(spec["template"]["metadata"]["labels"])
        for labels in label_sets:
            for key, text in labels.items():
                assert len(text) <= 63 and value.match(text), (key, text)
    assert label_value("m" * 100 + "a") != label_value("m" * 100 + "b")


def test_bundled_model_list_matches_the_vision_image_manifest() -> None:
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    s = settings()
    assert [(m.file, m.edgetpu, m.sha256) for m in s.vision_models] == [
        (m["file"], m["edgetpu"], m["sha256"]) for m in manifest["models"]
    ]
    assert s.vision_labels == sorted(manifest["labels"])


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORALL_TPU_RESOURCE", "")
    monkeypatch.setenv("KORALL_DEVICE_GROUPS", "[46]")
    monkeypatch.setenv("KORALL_VISION_IMAGE", "registry.local/vision:1.2.3")
    monkeypatch.setenv(
        "KORALL_VISION_MODELS", json.dumps([{"file": "custom.tflite", "edgetpu": False, "sha256": "c" * 64}])
    )
    s = OperatorSettings()
    assert s.tpu_resource == ""
    assert s.device_groups == [46]
    assert s.vision_image == "registry.local/vision:1.2.3"
    dep = build_vision_deployment("m", "ns", parse_inference_model({"model": {"file": "custom.tflite"}}), None, s)
    assert env(dep)[VisionEnv.MODEL_PATH] == "/models/custom.tflite"
    assert dep["metadata"]["labels"]["app.kubernetes.io/version"] == "1.2.3"


# ---------------------------------------------------------------------------------------------- model delivery

S3_SHA = "cd" * 32


def remote_model(**model: Any) -> InferenceModelSpec:
    return parse_inference_model({"model": {"sha256": S3_SHA, **model}})


def test_an_s3_model_is_downloaded_by_an_init_container_through_its_link_secret_into_the_node_cache() -> None:
    dep = build_vision_deployment("yard", "ns", remote_model(s3="s3://models/ssd.tflite"), None, settings())
    k8s_valid(dep)
    init, hold = pod(dep)["initContainers"]
    init_env = {e["name"]: e["value"] for e in init["env"]}
    assert init["command"] == ["python", "-m", "korall_workloads.fetch"] and init["image"] == container(dep)["image"]
    assert init_env["MODEL_SHA256"] == S3_SHA and init_env["MODEL_URL_FILE"] == "/var/run/korall/model-link/url"
    assert "MODEL_URL" not in init_env  # the link is a credential: in a Secret, never in the pod template
    # The node cache's budget (modelDelivery.cacheMaxBytes, cacheKeepSeconds) goes to every downloader.
    assert (init_env["MODEL_CACHE_MAX_BYTES"], init_env["MODEL_CACHE_KEEP_S"]) == (str(4 * 1024**3), "86400")
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["model-link"]["secret"]["secretName"] == "yard-model-link"
    assert volumes["model-cache"]["hostPath"] == {"path": "/var/lib/korall/models", "type": "DirectoryOrCreate"}
    # uid 0 for the root-owned node folder, and nothing else: no capability, no escalation, read-only root
    assert init["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsUser": 0,
        "runAsNonRoot": False,
    }
    assert env(dep)["MODEL_PATH"] == f"/var/lib/korall/models/sha256/{S3_SHA}" and env(dep)["MODEL_SHA256"] == S3_SHA
    mounts = {m["name"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["model-cache"]["readOnly"] is True and "model-link" not in mounts  # the service never sees it
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["korall.io/model"] == "s3://models/ssd.tflite" and annotations["korall.io/model-sha256"] == S3_SHA
    )
    # After the download, a native sidecar holds the model in the node cache for the pod's life (the vision
    # container holds it only while it runs): the same image, the contract's module, the same model and cache,
    # read-only, as the pod's user.
    assert hold["name"] == "model-hold" and hold["restartPolicy"] == "Always" and hold["image"] == init["image"]
    assert hold["command"] == ["python", "-m", MODEL_HOLD_MODULE]
    hold_env = {e["name"]: e["value"] for e in hold["env"]}
    assert hold_env == {"MODEL_SHA256": S3_SHA, "MODEL_CACHE_DIR": init_env["MODEL_CACHE_DIR"]}
    assert hold["volumeMounts"] == [{"name": "model-cache", "mountPath": init_env["MODEL_CACHE_DIR"], "readOnly": True}]
    assert "runAsUser" not in hold["securityContext"] and hold["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert hold["resources"]["limits"]["memory"] == "32Mi"


def test_a_url_model_names_its_url_and_its_header_secret_and_runs_as_the_pod_user_without_a_node_cache() -> None:
    model = remote_model(url="https://models.example/m.tflite", authHeaderSecret={"name": "hub", "key": "auth"})
    dep = build_vision_deployment("m", "ns", model, None, settings(model_cache_host_path=""))
    k8s_valid(dep)
    (init,) = pod(dep)["initContainers"]
    init_env = {e["name"]: e["value"] for e in init["env"]}
    assert init_env["MODEL_URL"] == "https://models.example/m.tflite"
    assert init_env["MODEL_HEADERS_FILE"] == "/var/run/korall/model-headers/headers"
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["model-headers"]["secret"]["items"] == [{"key": "auth", "path": "headers"}]
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    assert "runAsUser" not in init["securityContext"]  # an emptyDir is the pod's: no root needed
    # and no other pod collects in it: no sidecar holds the model (`(init,)` above: the download only)


def test_a_new_sha256_rolls_out_and_a_resigned_link_does_not() -> None:
    first = _hash(remote_model(s3="s3://models/ssd.tflite"))
    assert _hash(parse_inference_model({"model": {"s3": "s3://models/ssd.tflite", "sha256": "ef" * 32}})) != first
    assert _hash(remote_model(s3="s3://models/other.tflite")) != first
    # the link lives in the Secret, not in the template: signing it again changes nothing the pods run
    assert _hash(remote_model(s3="s3://models/ssd.tflite")) == first


# ---------------------------------------------------------------------------------------------- event delivery

EVENTS = {"mqtt": {"url": "mqtts://broker.example:8883", "credentialsSecret": "mqtt", "tlsSecret": "mqtt-tls"}}


def test_a_microphone_with_events_gets_the_broker_its_secrets_a_source_identity_and_a_node_spool() -> None:
    dep = build_audio_deployment("hall", "yard", microphone(events=EVENTS), settings())
    k8s_valid(dep)
    entries = {e["name"]: e for e in container(dep)["env"]}
    assert entries["EVENTS_MQTT_URL"]["value"] == "mqtts://broker.example:8883"
    assert entries["EVENTS_QOS"]["value"] == "1" and entries["EVENTS_TOPIC_PREFIX"]["value"] == "korall"
    assert entries["EVENTS_SOURCE_NAME"]["value"] == "hall"
    assert entries["EVENTS_SOURCE_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert entries["EVENTS_SOURCE_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert entries["EVENTS_MQTT_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "mqtt", "key": "password"}}
    assert entries["EVENTS_MQTT_TLS_CA_FILE"]["value"] == "/var/run/korall/mqtt-tls/ca.crt"
    assert "EVENTS_MQTT_TLS_CERT_FILE" not in entries  # no client certificate asked for
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["event-spool"]["hostPath"] == {
        "path": "/var/lib/korall/spool/yard/hall",
        "type": "DirectoryOrCreate",
    }
    (owner,) = pod(dep)["initContainers"]  # the kubelet makes the folder root's: given to the pod's user
    assert owner["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert str(pod(dep)["securityContext"].get("runAsUser", 10001)) in owner["command"][-1]


def test_an_ephemeral_spool_needs_no_owner_change_and_no_node_folder() -> None:
    events = {"mqtt": {"url": "mqtt://broker"}, "durableSpool": False}
    dep = build_vision_deployment(
        "m", "ns", parse_inference_model({"model": {"file": CPU_MODEL}, "events": events}), camera(), settings()
    )
    k8s_valid(dep)
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    assert volumes["event-spool"] == {"name": "event-spool", "emptyDir": {}}
    assert "initContainers" not in pod(dep)
    assert not any(e["name"].startswith("EVENTS_MQTT_USERNAME") for e in container(dep)["env"])


def test_a_camera_profile_cannot_carry_events_its_model_does() -> None:
    with pytest.raises(SpecError, match="events may only be set on an audio profile"):
        parse_capture_profile({"type": "video", "device": "/dev/video0", "video": {}, "events": EVENTS})
