"""The audio Deployment and Service of an audio CaptureProfile: one pod on the node with the microphone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from korall_contract import AUDIO_PORT, AudioEnv

from korall_operator.manifests.devices import Devices, sound_devices
from korall_operator.manifests.events import events_wiring
from korall_operator.manifests.http_access import http_access
from korall_operator.manifests.naming import CAPTURE_PROFILE_LABEL, Manifest, child_name, label_value, workload_labels
from korall_operator.manifests.pod import (
    deployment_manifest,
    env_list,
    probes,
    security_context,
    service_manifest,
)
from korall_operator.settings import OperatorSettings
from korall_operator.specs import CaptureProfileSpec, SpecError


def build_audio_deployment(
    name: str,
    namespace: str,
    capture: CaptureProfileSpec,
    settings: OperatorSettings,
    owner: Mapping[str, Any] | None = None,
) -> Manifest:
    """The audio Deployment of audio CaptureProfile `name`: one pod on the node with the microphone."""
    if capture.type != "audio" or capture.audio is None:
        raise SpecError(
            "CaptureProfileWrongType", f"CaptureProfile {name!r} is a {capture.type} profile, not an audio one"
        )
    component = "audio"
    audio = capture.audio
    labels = workload_labels(name, component, settings.audio_image, {CAPTURE_PROFILE_LABEL: label_value(name)})
    env: dict[str, Any] = {
        AudioEnv.HOST: "0.0.0.0",
        AudioEnv.PORT: AUDIO_PORT,
        AudioEnv.AUDIO_SOURCE: capture.device,
        AudioEnv.AUDIO_SAMPLE_RATE: audio.sample_rate,
        AudioEnv.AUDIO_CHANNELS: audio.channels,
        AudioEnv.AUDIO_CHUNK_S: audio.chunk_seconds,
        AudioEnv.AUDIO_OVERLAP_S: audio.overlap_seconds,
        AudioEnv.AUDIO_SILENCE_DBFS: audio.thresholds.silence_dbfs,
        AudioEnv.AUDIO_LOUD_DBFS: audio.thresholds.loud_dbfs,
        AudioEnv.LOG_JSON: settings.log_json,
    }
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    # An ALSA name (hw:1,0, default, plughw:...) lives in /dev/snd; a file path (a WAV for replay) needs no device.
    uses_alsa = not (capture.device or "").startswith("/")
    devices = sound_devices(settings) if uses_alsa else Devices()  # manifests/devices.py
    resources: dict[str, Any] = {}
    devices.add_to(resources)
    volumes += devices.volumes
    mounts += devices.mounts
    pod_security, container_security = security_context(devices.opens_device, settings)
    run_as = int(pod_security.get("runAsUser", settings.run_as_user))
    events = events_wiring(name, namespace, capture.events, settings, image=settings.audio_image, run_as=run_as)
    env.update(events.env)
    volumes += events.volumes
    mounts += events.mounts
    access = http_access(capture.auth, settings)  # tokens, HTTP limits (manifests/http_access.py)
    volumes += access.volumes
    mounts += access.mounts
    container = {
        "name": component,
        "image": settings.audio_image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": "http", "containerPort": AUDIO_PORT, "protocol": "TCP"}],
        "env": [*env_list(env), *events.env_refs, *access.env],
        **({"resources": resources} if resources else {}),
        "securityContext": container_security,
        "volumeMounts": mounts,
        **probes("http"),
    }
    return deployment_manifest(
        name=child_name(name, component),
        namespace=namespace,
        cr_name=name,
        component=component,
        labels=labels,
        replicas=1,
        container=container,
        volumes=volumes,
        node_selector=dict(capture.node_selector),
        affinity=None,
        pod_security=pod_security,
        exclusive_devices=devices.opens_device,
        template_annotations={},
        owner=owner,
        progress_deadline_s=settings.progress_deadline_s,
        init_containers=events.init_containers,
    )


def build_audio_service(
    name: str, namespace: str, settings: OperatorSettings, owner: Mapping[str, Any] | None = None
) -> Manifest:
    """The ClusterIP Service of audio CaptureProfile `name` (port 5053: /events, /health, /ready, /metrics)."""
    labels = workload_labels(name, "audio", settings.audio_image, {CAPTURE_PROFILE_LABEL: label_value(name)})
    return service_manifest(child_name(name, "audio"), namespace, name, "audio", labels, AUDIO_PORT, owner)
