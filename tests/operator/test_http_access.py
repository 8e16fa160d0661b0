"""The workload pods' HTTP side as the operator builds it (issue 15): the token Secret mounted (the CR's or the
chart's), the HTTP settings, the memory limit through the Downward API, a camera source from a Secret; and the
security context of every pod for every combination of devices. Pure builders: no server needed; every manifest
validated against the Kubernetes schemas."""

from __future__ import annotations

import itertools
from typing import Any

import kubernetes_validate
import pytest
from korall_contract import HttpEnv, VisionEnv
from korall_operator.manifests import build_audio_deployment, build_vision_deployment
from korall_operator.manifests.http_access import TOKENS_DIR_IN_POD
from korall_operator.settings import OperatorSettings
from korall_operator.specs import parse_capture_profile, parse_inference_model

K8S_VERSION = "1.34.0"
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod(deployment)["containers"]
    return dict(only)


def env_entries(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(deployment)["env"]}


def vision(model: dict[str, Any] | None = None, camera: dict[str, Any] | None = None, **settings: Any) -> Any:
    spec = parse_inference_model(model or {"model": {"file": CPU_MODEL}})
    profile = parse_capture_profile(camera) if camera is not None else None
    deployment = build_vision_deployment("yard", "edge", spec, profile, OperatorSettings(**settings))
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    return deployment


def audio(device: str = "hw:1,0", auth: dict[str, Any] | None = None, **settings: Any) -> Any:
    spec: dict[str, Any] = {"type": "audio", "device": device, "audio": {}}
    if auth is not None:
        spec["auth"] = auth
    deployment = build_audio_deployment("mic", "edge", parse_capture_profile(spec), OperatorSettings(**settings))
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    return deployment


def mounted_secrets(deployment: dict[str, Any]) -> dict[str, tuple[str, bool, bool]]:
    """{secret name: (mount path, read-only, optional)}."""
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    out = {}
    for volume in pod(deployment)["volumes"]:
        if "secret" in volume:
            mount = mounts[volume["name"]]
            out[volume["secret"]["secretName"]] = (
                mount["mountPath"],
                mount.get("readOnly", False),
                volume["secret"].get("optional", False),
            )
    return out


def test_every_workload_pod_mounts_the_charts_token_secret_and_gets_the_http_settings() -> None:
    for deployment in (vision(), audio()):
        assert mounted_secrets(deployment) == {"korall-api-tokens": (TOKENS_DIR_IN_POD, True, True)}
        env = env_entries(deployment)
        assert env[HttpEnv.AUTH_TOKENS_FILE]["value"] == f"{TOKENS_DIR_IN_POD}/tokens"
        assert env[HttpEnv.AUTH_METRICS]["value"] == "false"
        assert env[HttpEnv.RATE_LIMIT_PER_CLIENT]["value"] == env[HttpEnv.RATE_LIMIT_PER_TOKEN]["value"] == "100/second"
    chart = vision(metrics_need_token=True, rate_limit_per_client="20/second;600/minute", rate_limit_per_token="")
    env = env_entries(chart)
    assert env[HttpEnv.AUTH_METRICS]["value"] == "true"
    assert env[HttpEnv.RATE_LIMIT_PER_CLIENT]["value"] == "20/second;600/minute"
    assert env[HttpEnv.RATE_LIMIT_PER_TOKEN]["value"] == ""


def test_a_cr_names_its_own_token_secret_and_an_empty_chart_default_turns_auth_off() -> None:
    own = {"tokenSecretRef": {"name": "team-a-tokens"}}
    assert set(mounted_secrets(vision({"model": {"file": CPU_MODEL}, "auth": own}))) == {"team-a-tokens"}
    assert set(mounted_secrets(audio(auth=own))) == {"team-a-tokens"}
    off = vision(api_token_secret="")
    assert mounted_secrets(off) == {} and HttpEnv.AUTH_TOKENS_FILE not in env_entries(off)
    still = vision({"model": {"file": CPU_MODEL}, "auth": own}, api_token_secret="")
    assert set(mounted_secrets(still)) == {"team-a-tokens"}


def test_the_vision_pod_learns_its_memory_limit_from_the_downward_api() -> None:
    model = {"model": {"file": CPU_MODEL}, "resources": {"limits": {"memory": "384Mi"}}}
    entry = env_entries(vision(model))[VisionEnv.MEMORY_LIMIT_BYTES]
    assert entry == {
        "name": "MEMORY_LIMIT_BYTES",
        "valueFrom": {"resourceFieldRef": {"containerName": "vision", "resource": "limits.memory"}},
    }
    assert VisionEnv.MEMORY_LIMIT_BYTES not in env_entries(audio())


def test_a_camera_url_from_a_secret_reaches_the_pod_only_through_a_secret_key_ref() -> None:
    camera = {"type": "video", "video": {"sourceSecretRef": {"name": "yard-camera", "key": "url"}}}
    deployment = vision(camera=camera)
    assert env_entries(deployment)[VisionEnv.CAPTURE_SOURCE] == {
        "name": "CAPTURE_SOURCE",
        "valueFrom": {"secretKeyRef": {"name": "yard-camera", "key": "url"}},
    }
    assert not any("hostPath" in v for v in pod(deployment)["volumes"])  # a network source mounts no device
    assert container(deployment)["securityContext"].get("privileged") is not True
    # the profile's device is not the source any more, so it is not mounted either
    with_device = vision(camera={**camera, "device": "/dev/video0"})
    assert not any("hostPath" in v for v in pod(with_device)["volumes"])


CAMERAS: dict[str, dict[str, Any] | None] = {
    "no camera": None,
    "usb camera": {"type": "video", "device": "/dev/video0", "video": {}},
    "rtsp url": {"type": "video", "video": {"source": "rtsp://cam/stream"}},
    "url from a secret": {"type": "video", "video": {"sourceSecretRef": {"name": "cam", "key": "url"}}},
    "gstreamer on a device": {"type": "video", "video": {"source": "v4l2src device=/dev/video2 ! videoconvert"}},
}
MODELS: dict[str, dict[str, Any]] = {
    "cpu": {"model": {"file": CPU_MODEL}, "accelerator": "cpu"},
    "usb tpu": {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "tpuInterface": "usb"},
    "pci tpu": {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu", "tpuInterface": "pci"},
}
ACCESS = ["privileged", "device-plugin"]


def _check_security(deployment: dict[str, Any], has_device: bool, access: str) -> None:
    spec = pod(deployment)
    security = container(deployment)["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    host_paths = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
    assert bool(host_paths) == (has_device and access == "privileged")  # device-plugin: the plugin grants it
    granted = [k for k in container(deployment).get("resources", {}).get("limits", {}) if "/" in k]
    assert bool(granted) == has_device  # requested in both modes: the scheduler counts them
    if has_device and access == "privileged":
        assert security.get("privileged") is True
    else:
        assert security.get("privileged") is not True
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    for mount in container(deployment)["volumeMounts"]:
        if mount["mountPath"] == TOKENS_DIR_IN_POD:
            assert mount["readOnly"] is True


@pytest.mark.parametrize(
    ("model", "camera", "access"),
    list(itertools.product(MODELS, CAMERAS, ACCESS)),
    ids=[f"{m}, {c}, {a}" for m, c, a in itertools.product(MODELS, CAMERAS, ACCESS)],
)
def test_vision_security_context_for_every_device_combination(model: str, camera: str, access: str) -> None:
    deployment = vision(MODELS[model], CAMERAS[camera], device_access=access)
    has_device = model != "cpu" or camera in ("usb camera", "gstreamer on a device")
    _check_security(deployment, has_device, access)


@pytest.mark.parametrize(("device", "access"), list(itertools.product(["hw:1,0", "/data/replay.wav"], ACCESS)))
def test_audio_security_context_for_a_microphone_and_a_wav_file(device: str, access: str) -> None:
    _check_security(audio(device, device_access=access), not device.startswith("/"), access)
