"""What only the operator can check in a spec (no CRD schema can): the vision image's contents, the cluster's
set-up, and whether the node labels the parts of a spec require can all hold on one node. `specs` parses what the
schema also checks; these run after it, on the parsed models (before the catalog's gate: a spec no node can serve
is refused at once, not after its model was validated and approved)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from korall_operator.settings import OperatorSettings
from korall_operator.specs import CaptureProfileSpec, InferenceModelSpec, SpecError


@dataclass(frozen=True)
class NodeLabels:
    """The node labels one part of a spec makes the pod require: where that is said, and how to change it there."""

    where: str  # "the InferenceModel's nodeSelector", "tpuInterface usb"
    labels: Mapping[str, str]
    fix: str  # how to change this side; `{key}` is the label's key
    selector: bool = True
    """In the pod's nodeSelector. False: the operator requires it by node affinity, which also takes a node without
    the label (tpu_affinity: a cluster need not label its nodes at all)."""

    def requires(self, key: str) -> str:
        either = "" if self.selector else " (or no such label)"
        return f"{self.where} requires {self.labels[key]!r}{either}"


def merged_node_selector(*parts: NodeLabels) -> dict[str, str]:
    """The pod's nodeSelector: what the parts put there. Two parts that require different values of one label are
    a NodeSelectorConflict naming both and how to change either (the pod could never be scheduled: the scheduler
    would only say Unschedulable, without telling which part of the spec is at odds with which)."""
    merged: dict[str, str] = {}
    first: dict[str, NodeLabels] = {}
    for part in parts:
        for key, value in part.labels.items():
            other = first.setdefault(key, part)
            if other.labels[key] != value:
                raise SpecError(
                    "NodeSelectorConflict",
                    f"node label {key!r}: {other.requires(key)}, but {part.requires(key)}: no node can satisfy "
                    f"both; {other.fix.format(key=repr(key))}, or {part.fix.format(key=repr(key))}",
                )
            if part.selector:
                merged[key] = value
    return merged


def vision_node_selector(
    model: InferenceModelSpec, capture: CaptureProfileSpec | None, settings: OperatorSettings
) -> dict[str, str]:
    """The vision pod's nodeSelector: the model's and its camera's; the TPU interface the operator requires by node
    affinity (manifests/pod.py: tpu_affinity, on settings.tpu_node_label) must agree with both."""
    own = "the InferenceModel's nodeSelector"
    parts = [NodeLabels(own, model.node_selector, f"change or remove {{key}} in {own}")]
    if capture is not None and capture.video is not None:
        camera = "the CaptureProfile's nodeSelector"
        fix = f"change {{key}} in {camera}"
        parts.append(NodeLabels(f"{camera} (where its camera is)", capture.node_selector, fix))
    if model.accelerator == "edgetpu" and settings.tpu_node_label:
        interface = model.effective_tpu_interface
        said = f"tpuInterface {interface}" + ("" if model.tpu_interface else " (the default)")
        fix = "set the InferenceModel's tpuInterface to the interface of the node's TPU (usb or pci)"
        parts.append(NodeLabels(said, {settings.tpu_node_label: interface}, fix, selector=False))
    return merged_node_selector(*parts)


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
    vision_node_selector(model, capture, settings)  # NodeSelectorConflict: no node could take the pod
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
