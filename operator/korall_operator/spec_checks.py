"""What only the operator can check in a spec (no CRD schema can): the vision image's contents and the cluster's
set-up. `specs` parses what the schema also checks; these run after it, on the parsed models."""

from __future__ import annotations

from korall_operator.settings import OperatorSettings
from korall_operator.specs import CaptureProfileSpec, InferenceModelSpec, SpecError


def check_vision_spec(
    model: InferenceModelSpec, capture: CaptureProfileSpec | None, settings: OperatorSettings
) -> None:
    """Raise SpecError for what only the operator can know (the schema cannot): image contents, cluster setup."""
    source = model.model
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
    if source.file is None:
        return  # downloaded: the file is checked by its sha256 on the node; an Edge TPU build is told by content
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
