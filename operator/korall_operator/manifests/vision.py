"""The vision Deployment and Service of an InferenceModel, fed by its video CaptureProfile when it has one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from korall_contract import MODELS_DIR_IN_IMAGE, VISION_PORT, VisionEnv

from korall_operator.manifests.devices import CAMERA_RESOURCES_ANNOTATION, Devices, camera_devices, tpu_devices
from korall_operator.manifests.events import events_wiring
from korall_operator.manifests.http_access import http_access, memory_limit_env, secret_env
from korall_operator.manifests.model_delivery import model_delivery
from korall_operator.manifests.naming import (
    CAPTURE_PROFILE_LABEL,
    INFERENCE_MODEL_LABEL,
    MODEL_ANNOTATION,
    MODEL_SHA256_ANNOTATION,
    STAGE_LABEL,
    Manifest,
    child_name,
    label_value,
    workload_labels,
)
from korall_operator.manifests.pod import (
    deployment_manifest,
    env_list,
    probes,
    security_context,
    service_manifest,
    tpu_affinity,
)
from korall_operator.manifests.validation import self_test_wiring
from korall_operator.settings import OperatorSettings
from korall_operator.spec_checks import check_vision_spec, vision_node_selector
from korall_operator.specs import CaptureProfileSpec, InferenceModelSpec


def model_sha256(model: InferenceModelSpec, settings: OperatorSettings) -> str | None:
    """The sha256 of the model the pod runs: the spec's, else the bundled file's (check_vision_spec ran)."""
    if model.model.sha256 is not None:
        return model.model.sha256
    bundled = settings.model_file(model.model.file or "")
    return bundled.sha256 if bundled is not None else None


_DEVICE_IN_PIPELINE = re.compile(r"(/dev/[A-Za-z0-9_./-]+)")


def devices_of_source(source: str | None) -> list[str]:
    """The device nodes a capture source opens, and so the only ones its pod mounts: the device itself, or those a
    GStreamer pipeline names (`v4l2src device=/dev/video0 ! ...`); none for a URL or a file, which then neither
    asks for the profile's `device` nor runs privileged for it."""
    if not source:
        return []
    if source.startswith("/dev/"):
        return [source]
    if "!" in source:  # a GStreamer pipeline
        return list(dict.fromkeys(_DEVICE_IN_PIPELINE.findall(source)))
    return []


def build_vision_deployment(
    name: str,
    namespace: str,
    model: InferenceModelSpec,
    capture: CaptureProfileSpec | None,
    settings: OperatorSettings,
    owner: Mapping[str, Any] | None = None,
) -> Manifest:
    """The vision Deployment of InferenceModel `name`; `capture` is its resolved video CaptureProfile, if any.

    The handler resolves `spec.captureProfileRef` itself (a missing profile is its condition to report) and
    passes None when there is no reference.
    """
    check_vision_spec(model, capture, settings)
    component = "vision"
    delivery = model_delivery(name, model, settings)
    labels = workload_labels(name, component, settings.vision_image, {INFERENCE_MODEL_LABEL: label_value(name)})
    if model.capture_profile_ref is not None:
        labels[CAPTURE_PROFILE_LABEL] = label_value(model.capture_profile_ref.name)

    env: dict[str, Any] = {
        VisionEnv.HOST: "0.0.0.0",
        VisionEnv.PORT: VISION_PORT,
        VisionEnv.MODELS_DIR: MODELS_DIR_IN_IMAGE,
        VisionEnv.MODEL_PATH: f"{MODELS_DIR_IN_IMAGE}/{model.model.file}",
        VisionEnv.LABELS_PATH: f"{MODELS_DIR_IN_IMAGE}/{model.labels}",
        VisionEnv.MODEL_SHA256: model_sha256(model, settings),
        VisionEnv.SCORE_TH: model.score_threshold,
        VisionEnv.TOPK: model.top_k,
        VisionEnv.ACCELERATOR: model.accelerator,
        VisionEnv.LOG_JSON: settings.log_json,
    }
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if delivery is not None:
        env.update(delivery.env)
        volumes += delivery.volumes
        mounts += delivery.mounts
    resources: dict[str, Any] = {
        "requests": dict(model.resources.requests),
        "limits": dict(model.resources.limits),
    }
    affinity = None
    devices = Devices()  # resources, and hostPaths in privileged mode: manifests/devices.py

    if model.accelerator == "edgetpu":
        interface = model.effective_tpu_interface
        env[VisionEnv.EDGETPU_DEVICE] = interface
        affinity = tpu_affinity(interface, settings)
        devices += tpu_devices(interface, settings)

    access = http_access(model.auth, settings)  # tokens, HTTP limits (manifests/http_access.py)
    extra_env = [*access.env, memory_limit_env(component)]
    volumes += access.volumes
    mounts += access.mounts

    if capture is not None and capture.video is not None:
        video = capture.video
        # A source from a Secret (credentials in the URL) is never seen here: it names no device to mount.
        source = None if video.source_secret_ref is not None else video.source or capture.device
        if video.source_secret_ref is not None:
            extra_env.append(secret_env(VisionEnv.CAPTURE_SOURCE, video.source_secret_ref))
        env.update(
            {
                VisionEnv.CAPTURE_SOURCE: source,
                VisionEnv.CAPTURE_WIDTH: video.width,
                VisionEnv.CAPTURE_HEIGHT: video.height,
                VisionEnv.CAPTURE_FPS: video.fps,
                VisionEnv.CAPTURE_PIXEL_FORMAT: video.pixel_format,
                VisionEnv.CAPTURE_SAMPLE_EVERY: video.sample_every,
                VisionEnv.CAPTURE_BUFFER_FRAMES: video.buffer_frames,
            }
        )
        devices += camera_devices(devices_of_source(source), settings)

    node_selector = vision_node_selector(model, capture, settings)
    devices.add_to(resources)
    volumes += devices.volumes
    mounts += devices.mounts
    pod_security, container_security = security_context(devices.opens_device, settings)
    template_annotations = {
        MODEL_ANNOTATION: model.model.display,
        MODEL_SHA256_ANNOTATION: model_sha256(model, settings) or "",
    }
    if devices.camera_resources:
        template_annotations[CAMERA_RESOURCES_ANNOTATION] = ",".join(devices.camera_resources)
    run_as = int(pod_security.get("runAsUser", settings.run_as_user))
    # Events of its camera, if the model says where they go (an InferenceModel without a camera makes none).
    events = events_wiring(name, namespace, model.events, settings, image=settings.vision_image, run_as=run_as)
    env.update(events.env)
    volumes += events.volumes
    mounts += events.mounts
    # The download, then the sidecar holding its model in the node cache (it starts once the download is done).
    init_containers = [*delivery.init_containers, *delivery.sidecars] if delivery is not None else []
    init_containers += events.init_containers
    # The golden set the pod runs once before it reports ready (catalog: a model that sees nothing never serves).
    self_test = self_test_wiring(model, settings)
    if self_test is not None:
        env.update(self_test.env)
        volumes += self_test.volumes
        mounts += self_test.mounts
        init_containers += self_test.init_containers

    container = {
        "name": component,
        "image": settings.vision_image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": "http", "containerPort": VISION_PORT, "protocol": "TCP"}],
        "env": [*env_list(env), *events.env_refs, *extra_env],
        "resources": {k: v for k, v in resources.items() if v},
        "securityContext": container_security,
        "volumeMounts": mounts,
        **probes("http"),
    }
    deployment = deployment_manifest(
        name=child_name(name, component),
        namespace=namespace,
        cr_name=name,
        component=component,
        labels=labels,
        replicas=model.replicas,
        container=container,
        volumes=volumes,
        node_selector=node_selector,
        affinity=affinity,
        pod_security=pod_security,
        exclusive_devices=devices.opens_device,
        template_annotations=template_annotations,
        owner=owner,
        progress_deadline_s=settings.progress_deadline_s,
        init_containers=init_containers,
    )
    # The stage labels the Deployment only, not its pods: promoting test -> production rolls nothing out.
    deployment["metadata"]["labels"][STAGE_LABEL] = model.stage
    return deployment


def build_vision_service(
    name: str, namespace: str, settings: OperatorSettings, owner: Mapping[str, Any] | None = None
) -> Manifest:
    """The ClusterIP Service in front of InferenceModel `name`'s pods (port 5052: /infer, /health, /ready)."""
    labels = workload_labels(name, "vision", settings.vision_image, {INFERENCE_MODEL_LABEL: label_value(name)})
    return service_manifest(child_name(name, "vision"), namespace, name, "vision", labels, VISION_PORT, owner)
