"""Pure functions that turn specs into the child objects the operator owns. No I/O, no kopf, no API client.

One InferenceModel gives a vision Deployment and a Service (port 5052), fed by its video CaptureProfile when it
references one (vision.py). One audio CaptureProfile gives an audio Deployment and a Service (port 5053): audio
needs no model choice, so an InferenceModel for audio would be an empty indirection (audio.py). A video
CaptureProfile gives nothing by itself; it is an input of the InferenceModels that reference it. Both are built
from the same pod parts (pod.py: security context, probes, strategy; devices.py: how a pod gets its TPU, camera
and microphone) and names (naming.py).

No ConfigMap: every setting reaches the pod as an environment variable of the pod template (names from
`korall_contract` only), so any change of a pod-affecting field changes the template and Kubernetes rolls it
out; there is no in-process reload anywhere. The `korall.io/spec-hash` annotation on the pod template is a
digest of the template itself: equal hashes mean nothing to roll out, and the control loop reports a rollout
when it changes.

Ownership: every builder takes an optional `owner` (the owning CR's body, a Mapping with apiVersion, kind,
metadata.name and metadata.uid) and then adds a controller ownerReference, so that deleting the CR cascades.
Handlers pass `owner=body`; kopf.adopt is not needed (it would also copy the owner's labels onto the children).
"""

from korall_operator.manifests.audio import build_audio_deployment, build_audio_service
from korall_operator.manifests.devices import CAMERA_RESOURCES_ANNOTATION
from korall_operator.manifests.model_delivery import (
    LINK_CREDENTIALS_ANNOTATION,
    LINK_EXPIRES_ANNOTATION,
    LINK_KEY,
    LINK_OBJECT_ANNOTATION,
    link_secret_name,
)
from korall_operator.manifests.naming import (
    CAPTURE_PROFILE_LABEL,
    INFERENCE_MODEL_LABEL,
    MANAGED_BY,
    MODEL_ANNOTATION,
    MODEL_SHA256_ANNOTATION,
    PART_OF,
    SPEC_HASH_ANNOTATION,
    STAGE_LABEL,
    Manifest,
    child_name,
    label_value,
    owner_reference,
    pod_template_hash,
    selector_labels,
    spec_hash,
    workload_labels,
)
from korall_operator.manifests.pod import PCI_APEX_PATH, SOUND_PATH, USB_BUS_PATH
from korall_operator.manifests.vision import build_vision_deployment, build_vision_service

__all__ = [
    "CAMERA_RESOURCES_ANNOTATION",
    "CAPTURE_PROFILE_LABEL",
    "INFERENCE_MODEL_LABEL",
    "LINK_CREDENTIALS_ANNOTATION",
    "LINK_EXPIRES_ANNOTATION",
    "LINK_KEY",
    "LINK_OBJECT_ANNOTATION",
    "MANAGED_BY",
    "MODEL_ANNOTATION",
    "MODEL_SHA256_ANNOTATION",
    "PART_OF",
    "PCI_APEX_PATH",
    "SOUND_PATH",
    "SPEC_HASH_ANNOTATION",
    "STAGE_LABEL",
    "USB_BUS_PATH",
    "Manifest",
    "build_audio_deployment",
    "build_audio_service",
    "build_vision_deployment",
    "build_vision_service",
    "child_name",
    "label_value",
    "link_secret_name",
    "owner_reference",
    "pod_template_hash",
    "selector_labels",
    "spec_hash",
    "workload_labels",
]
