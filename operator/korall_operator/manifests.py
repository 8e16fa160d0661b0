"""Pure functions that turn specs into the child objects the operator owns. No I/O, no kopf, no API client.

One InferenceModel gives a vision Deployment and a Service (port 5052), fed by its video CaptureProfile when it
references one. One audio CaptureProfile gives an audio Deployment and a Service (port 5053): audio needs no
model choice, so an InferenceModel for audio would be an empty indirection. A video CaptureProfile gives nothing
by itself; it is an input of the InferenceModels that reference it.

No ConfigMap: every setting reaches the pod as an environment variable of the pod template (names from
`korall_contract` only), so any change of a pod-affecting field changes the template and Kubernetes rolls it
out; there is no in-process reload anywhere. The `korall.io/spec-hash` annotation on the pod template is a
digest of the template itself: equal hashes mean nothing to roll out, and the control loop reports a rollout
when it changes.

Ownership: every builder takes an optional `owner` (the owning CR's body, a Mapping with apiVersion, kind,
metadata.name and metadata.uid) and then adds a controller ownerReference, so that deleting the CR cascades.
Handlers pass `owner=body`; kopf.adopt is not needed (it would also copy the owner's labels onto the children).

Devices (why the security context is what it is): a hostPath mount of /dev/bus/usb, /dev/apex_0, /dev/video0 or
/dev/snd only makes the device node visible; the container's device cgroup still denies open(). Kubernetes has
no field to allow a device cgroup rule, so with plain hostPath mounts the container must be privileged. This is
what Coral's own Docker instructions (`--privileged -v /dev/bus/usb:/dev/bus/usb`) and Frigate's Helm chart do.
The USB accelerator makes it worse: it enumerates as 1a6e:089a, loads its firmware on the first inference and
re-enumerates as 18d1:9302 under a NEW node in /dev/bus/usb, so a single `--device` node would go stale; the
whole bus is mounted. When a device plugin grants the device instead (settings.device_access == "device-plugin",
e.g. squat/generic-device-plugin, which adds the cgroup rule in its Allocate), pods run unprivileged. All pods run as
the images' non-root user with a read-only root filesystem; device pods also get the host groups that own device
nodes (settings.device_groups); pods without any device also drop all capabilities.

Rollout strategy: a pod holding a TPU (or a camera / microphone, which one process opens at a time) uses
`Recreate`: a RollingUpdate surge pod could never schedule beside the old one on a node with one TPU (the extended
resource is exhausted) and the rollout would deadlock. CPU-only pods without devices roll with maxUnavailable 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from korall_contract import (
    API_GROUP,
    API_VERSION,
    AUDIO_PORT,
    MODELS_DIR_IN_IMAGE,
    VISION_PORT,
    AudioEnv,
    VisionEnv,
)

from korall_operator.settings import OperatorSettings
from korall_operator.specs import CaptureProfileSpec, InferenceModelSpec, SpecError

SPEC_HASH_ANNOTATION = f"{API_GROUP}/spec-hash"
MODEL_ANNOTATION = f"{API_GROUP}/model"
INFERENCE_MODEL_LABEL = f"{API_GROUP}/inference-model"
STAGE_LABEL = f"{API_GROUP}/stage"
CAPTURE_PROFILE_LABEL = f"{API_GROUP}/capture-profile"
MANAGED_BY = "korall-operator"
PART_OF = "korall"

USB_BUS_PATH = "/dev/bus/usb"
PCI_APEX_PATH = "/dev/apex_0"
SOUND_PATH = "/dev/snd"

Manifest = dict[str, Any]


# ---------------------------------------------------------------------------------------------- naming & labels


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


def _labels(name: str, component: str, image: str, extra: Mapping[str, str]) -> dict[str, str]:
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


def _metadata(name: str, namespace: str, labels: dict[str, str], owner: Mapping[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return meta


# ---------------------------------------------------------------------------------------------- hashing


def spec_hash(*parts: Any) -> str:
    """A short, stable digest of JSON-able parts (key order does not matter). Used on the pod template."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stamp(template: Manifest) -> Manifest:
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


# ---------------------------------------------------------------------------------------------- pod parts


def _env(pairs: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for key, value in pairs.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append({"name": key, "value": text})
    return out


def _merge_node_selectors(*selectors: tuple[str, Mapping[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    for where, selector in selectors:
        for key, value in selector.items():
            if key in merged and merged[key] != value:
                raise SpecError(
                    "NodeSelectorConflict",
                    f"nodeSelector {key!r} is {merged[key]!r} in {origin[key]} but {value!r} in {where}: "
                    "no node can satisfy both; make them agree",
                )
            merged[key] = value
            origin[key] = where
    return merged


def _probes(port_name: str) -> dict[str, Any]:
    """Readiness on /ready (model loaded and warmed up), liveness on /health; a startup probe covers the load."""
    return {
        "startupProbe": {
            "httpGet": {"path": "/health", "port": port_name},
            "periodSeconds": 2,
            "failureThreshold": 60,
            "timeoutSeconds": 2,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": port_name},
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": port_name},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 3,
        },
    }


def _security_context(needs_device: bool, settings: OperatorSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod securityContext, container securityContext): the smallest that works; see the module docstring.

    Every pod runs as the images' non-root user. A pod with a device also gets the host groups that own device
    nodes as supplementalGroups (the device cgroup decides whether the device may be opened at all, the file mode
    whether this user may); `device_run_as_user: 0` is the escape hatch for nodes whose device nodes are root-only.
    """
    pod: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if needs_device and settings.device_run_as_user is not None:
        pod["runAsUser"] = settings.device_run_as_user
    else:
        pod.update(
            runAsNonRoot=True,
            runAsUser=settings.run_as_user,
            runAsGroup=settings.run_as_user,
            fsGroup=settings.run_as_user,
        )
    if needs_device and settings.device_groups:
        pod["supplementalGroups"] = list(settings.device_groups)
    if needs_device and settings.device_access == "privileged":
        # privileged is what opens the device cgroup for hostPath devices; it excludes allowPrivilegeEscalation=false
        return pod, {"privileged": True, "readOnlyRootFilesystem": True}
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def _host_device(volume: str, path: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) of a host device at the same path inside the container."""
    return {"name": volume, "hostPath": {"path": path, "type": kind}}, {"name": volume, "mountPath": path}


def _tpu_affinity(interface: str, settings: OperatorSettings) -> dict[str, Any] | None:
    if not settings.tpu_node_label:
        return None
    term = {"matchExpressions": [{"key": settings.tpu_node_label, "operator": "In", "values": [interface]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _strategy(exclusive_devices: bool) -> dict[str, Any]:
    if exclusive_devices:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _deployment(
    *,
    name: str,
    namespace: str,
    cr_name: str,
    component: str,
    labels: dict[str, str],
    replicas: int,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    node_selector: dict[str, str],
    affinity: dict[str, Any] | None,
    pod_security: dict[str, Any],
    exclusive_devices: bool,
    template_annotations: dict[str, str],
    owner: Mapping[str, Any] | None,
    progress_deadline_s: int,
) -> Manifest:
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 15,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if affinity:
        pod_spec["affinity"] = affinity
    template = _stamp(
        {"metadata": {"labels": dict(labels), "annotations": dict(template_annotations)}, "spec": pod_spec}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, labels, owner),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": progress_deadline_s,
            "selector": {"matchLabels": selector_labels(cr_name, component)},
            "strategy": _strategy(exclusive_devices),
            "template": template,
        },
    }


def _service(
    name: str, namespace: str, cr_name: str, component: str, labels: dict[str, str], port: int, owner: Any
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, labels, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr_name, component),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# ---------------------------------------------------------------------------------------------- vision


def check_vision_spec(
    model: InferenceModelSpec, capture: CaptureProfileSpec | None, settings: OperatorSettings
) -> None:
    """Raise SpecError for what only the operator can know (the schema cannot): image contents, cluster setup."""
    source = model.model
    if source.file is None:
        kind = "url" if source.url else "s3"
        raise SpecError(
            "ModelSourceNotSupported",
            f"model.{kind} is accepted and validated, but this operator version only serves model files bundled "
            f"in the vision image; use model.file (one of: {', '.join(m.file for m in settings.vision_models)})",
        )
    bundled = settings.model_file(source.file)
    if bundled is None:
        raise SpecError(
            "ModelNotInImage",
            f"model.file {source.file!r} is not in the vision image {settings.vision_image}; "
            f"available: {', '.join(m.file for m in settings.vision_models)}",
        )
    if model.accelerator == "edgetpu" and not bundled.edgetpu:
        raise SpecError(
            "ModelNotCompiledForEdgeTPU",
            f"accelerator edgetpu needs a model compiled for the Edge TPU, and {source.file!r} is a CPU model; "
            f"use one of: {', '.join(m.file for m in settings.vision_models if m.edgetpu) or 'none bundled'}",
        )
    if model.accelerator == "cpu" and bundled.edgetpu:
        raise SpecError(
            "ModelNeedsEdgeTPU",
            f"{source.file!r} is compiled for the Edge TPU and cannot run with accelerator cpu; "
            f"use one of: {', '.join(m.file for m in settings.vision_models if not m.edgetpu) or 'none bundled'}",
        )
    if source.sha256 is not None and source.sha256 != bundled.sha256:
        raise SpecError(
            "ModelChecksumMismatch",
            f"model.sha256 {source.sha256} does not match the bundled {source.file!r} ({bundled.sha256})",
        )
    if model.labels not in settings.vision_labels:
        raise SpecError(
            "LabelsNotInImage",
            f"labels {model.labels!r} is not in the vision image; available: {', '.join(settings.vision_labels)}",
        )
    if model.accelerator == "edgetpu" and not settings.tpu_resource:
        raise SpecError(
            "TPUResourceNotConfigured",
            "accelerator edgetpu needs a TPU extended resource, and the operator has none configured "
            "(KORALL_TPU_RESOURCE is empty); install a Coral device plugin and set it, or use accelerator cpu",
        )
    if capture is not None and capture.type != "video":
        ref = model.capture_profile_ref.name if model.capture_profile_ref else "?"
        raise SpecError(
            "CaptureProfileWrongType",
            f"captureProfileRef {ref!r} is an {capture.type} profile; an InferenceModel needs a video profile",
        )


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
    assert model.model.file is not None  # checked above
    component = "vision"
    labels = _labels(name, component, settings.vision_image, {INFERENCE_MODEL_LABEL: label_value(name)})
    if model.capture_profile_ref is not None:
        labels[CAPTURE_PROFILE_LABEL] = label_value(model.capture_profile_ref.name)

    env: dict[str, Any] = {
        VisionEnv.HOST: "0.0.0.0",
        VisionEnv.PORT: VISION_PORT,
        VisionEnv.MODELS_DIR: MODELS_DIR_IN_IMAGE,
        VisionEnv.MODEL_PATH: f"{MODELS_DIR_IN_IMAGE}/{model.model.file}",
        VisionEnv.LABELS_PATH: f"{MODELS_DIR_IN_IMAGE}/{model.labels}",
        VisionEnv.MODEL_SHA256: model.model.sha256,
        VisionEnv.SCORE_TH: model.score_threshold,
        VisionEnv.TOPK: model.top_k,
        VisionEnv.ACCELERATOR: model.accelerator,
        VisionEnv.LOG_JSON: settings.log_json,
    }
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    resources: dict[str, Any] = {
        "requests": dict(model.resources.requests),
        "limits": dict(model.resources.limits),
    }
    affinity = None
    needs_device = False

    if model.accelerator == "edgetpu":
        interface = model.effective_tpu_interface
        env[VisionEnv.EDGETPU_DEVICE] = interface
        resources["limits"][settings.tpu_resource] = "1"  # a quantity: the API server returns it as a string
        resources["requests"].pop(settings.tpu_resource, None)  # extended resources: request defaults to limit
        affinity = _tpu_affinity(interface, settings)
        if interface == "usb":
            volume, mount = _host_device("edgetpu-usb", USB_BUS_PATH, "Directory")
        else:
            volume, mount = _host_device("edgetpu-pci", PCI_APEX_PATH, "CharDevice")
        volumes.append(volume)
        mounts.append(mount)
        needs_device = True

    capture_selector: dict[str, str] = {}
    if capture is not None and capture.video is not None:
        video = capture.video
        env.update(
            {
                VisionEnv.CAPTURE_SOURCE: video.source or capture.device,
                VisionEnv.CAPTURE_WIDTH: video.width,
                VisionEnv.CAPTURE_HEIGHT: video.height,
                VisionEnv.CAPTURE_FPS: video.fps,
                VisionEnv.CAPTURE_PIXEL_FORMAT: video.pixel_format,
                VisionEnv.CAPTURE_SAMPLE_EVERY: video.sample_every,
                VisionEnv.CAPTURE_BUFFER_FRAMES: video.buffer_frames,
            }
        )
        if capture.device is not None:
            volume, mount = _host_device("camera", capture.device, "CharDevice")
            volumes.append(volume)
            mounts.append(mount)
            needs_device = True
        capture_selector = dict(capture.node_selector)

    node_selector = _merge_node_selectors(
        ("the InferenceModel", model.node_selector), ("the CaptureProfile", capture_selector)
    )
    pod_security, container_security = _security_context(needs_device, settings)

    container = {
        "name": component,
        "image": settings.vision_image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": "http", "containerPort": VISION_PORT, "protocol": "TCP"}],
        "env": _env(env),
        "resources": {k: v for k, v in resources.items() if v},
        "securityContext": container_security,
        "volumeMounts": mounts,
        **_probes("http"),
    }
    deployment = _deployment(
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
        exclusive_devices=needs_device,
        template_annotations={MODEL_ANNOTATION: model.model.file},
        owner=owner,
        progress_deadline_s=settings.progress_deadline_s,
    )
    # The stage labels the Deployment only, not its pods: promoting test -> production rolls nothing out.
    deployment["metadata"]["labels"][STAGE_LABEL] = model.stage
    return deployment


def build_vision_service(
    name: str, namespace: str, settings: OperatorSettings, owner: Mapping[str, Any] | None = None
) -> Manifest:
    """The ClusterIP Service in front of InferenceModel `name`'s pods (port 5052: /infer, /health, /ready)."""
    labels = _labels(name, "vision", settings.vision_image, {INFERENCE_MODEL_LABEL: label_value(name)})
    return _service(child_name(name, "vision"), namespace, name, "vision", labels, VISION_PORT, owner)


# ---------------------------------------------------------------------------------------------- audio


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
    labels = _labels(name, component, settings.audio_image, {CAPTURE_PROFILE_LABEL: label_value(name)})
    env = {
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
    if uses_alsa:
        volume, mount = _host_device("sound", SOUND_PATH, "Directory")
        volumes.append(volume)
        mounts.append(mount)
    pod_security, container_security = _security_context(uses_alsa, settings)
    container = {
        "name": component,
        "image": settings.audio_image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": "http", "containerPort": AUDIO_PORT, "protocol": "TCP"}],
        "env": _env(env),
        "securityContext": container_security,
        "volumeMounts": mounts,
        **_probes("http"),
    }
    return _deployment(
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
        exclusive_devices=uses_alsa,
        template_annotations={},
        owner=owner,
        progress_deadline_s=settings.progress_deadline_s,
    )


def build_audio_service(
    name: str, namespace: str, settings: OperatorSettings, owner: Mapping[str, Any] | None = None
) -> Manifest:
    """The ClusterIP Service of audio CaptureProfile `name` (port 5053: /events, /health, /ready, /metrics)."""
    labels = _labels(name, "audio", settings.audio_image, {CAPTURE_PROFILE_LABEL: label_value(name)})
    return _service(child_name(name, "audio"), namespace, name, "audio", labels, AUDIO_PORT, owner)
