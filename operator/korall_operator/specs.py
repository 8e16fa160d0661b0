"""Typed views of the `spec` of korall's two custom resources, and the one error a bad spec raises.

The CRDs in `crds/` validate these same rules at admission on a real cluster (openAPIV3Schema ranges, enums,
defaults and CEL rules). The operator parses every spec through these models anyway, because it must never
trust its input: a CR may predate a schema change, and the test emulator (kmock) validates nothing. When the
two disagree, the CRD is the reference; `tests/operator/test_crds.py` checks samples and bad specs against both.

Field names are camelCase in Kubernetes and snake_case here (`populate_by_name=True` accepts both).
Defaults match the CRD defaults, so a spec the API server defaulted and a raw one parse to the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

SHA256_RE = r"^[a-f0-9]{64}$"
MODEL_FILE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.tflite$"
LABELS_FILE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.txt$"


class SpecError(Exception):
    """A spec the operator cannot turn into a workload. Reported as a Degraded condition and an Event.

    `reason` is a CamelCase machine word (the condition's reason), `message` a sentence for a human that says
    what is wrong and how to fix it. The handler must not retry on it: only a spec change can fix it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class _Spec(BaseModel):
    """Base of all spec parts: camelCase aliases, unknown fields rejected (the CRD schema prunes them too)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- InferenceModel


class ModelSource(_Spec):
    """Where the model comes from: a file bundled in the vision image, or (later) a URL or S3 URI with a sha256."""

    file: str | None = Field(default=None, pattern=MODEL_FILE_RE, description="A .tflite file in the image's /models.")
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    s3: str | None = Field(default=None, pattern=r"^s3://[a-z0-9.-]{3,63}/\S+$", max_length=2048)
    sha256: str | None = Field(
        default=None, pattern=SHA256_RE, description="Expected checksum; required for url and s3."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        given = [k for k in ("file", "url", "s3") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of model.file, model.url or model.s3 must be set")
        if given[0] in ("url", "s3") and self.sha256 is None:
            raise ValueError("model.url and model.s3 require model.sha256")
        return self

    @property
    def display(self) -> str:
        """The model as a human names it: the file name, or the URL / S3 URI."""
        return self.file or self.url or self.s3 or ""


class CaptureProfileRef(_Spec):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


Quantity = int | float | str


class Resources(_Spec):
    """The container's requests and limits (Kubernetes quantities), passed through as given."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class InferenceModelSpec(_Spec):
    """spec of an InferenceModel: one vision Deployment serving one model."""

    model: ModelSource
    labels: str = Field(default="coco_labels.txt", pattern=LABELS_FILE_RE)
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    top_k: int = Field(default=10, ge=1, le=100)
    accelerator: Literal["edgetpu", "cpu"] = "cpu"
    tpu_interface: Literal["usb", "pci"] | None = None
    capture_profile_ref: CaptureProfileRef | None = None
    replicas: int = Field(default=1, ge=0, le=100)
    node_selector: dict[str, str] = Field(default_factory=dict)
    stage: Literal["test", "demo", "production"] = "test"
    resources: Resources = Field(default_factory=lambda: Resources.model_validate({}))

    @model_validator(mode="after")
    def _interface_needs_tpu(self) -> InferenceModelSpec:
        if self.tpu_interface is not None and self.accelerator != "edgetpu":
            raise ValueError("tpuInterface may only be set when accelerator is edgetpu")
        return self

    @property
    def effective_tpu_interface(self) -> Literal["usb", "pci"]:
        """The TPU interface in use; USB when an edgetpu model does not say."""
        return self.tpu_interface or "usb"


# ---------------------------------------------------------------------------------------------- CaptureProfile


class VideoSpec(_Spec):
    width: int = Field(default=640, ge=160, le=7680)
    height: int = Field(default=480, ge=120, le=4320)
    fps: int = Field(default=15, ge=1, le=120)
    pixel_format: Literal["MJPG", "YUYV"] = "MJPG"
    sample_every: int = Field(default=1, ge=1, le=1000)
    buffer_frames: int = Field(default=2, ge=1, le=64)
    source: str | None = Field(default=None, min_length=1, max_length=4096)


class AudioThresholds(_Spec):
    silence_dbfs: float = Field(default=-50.0, ge=-120.0, le=0.0)
    loud_dbfs: float = Field(default=-20.0, ge=-120.0, le=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> AudioThresholds:
        if self.silence_dbfs >= self.loud_dbfs:
            raise ValueError("audio.thresholds.silenceDbfs must be below loudDbfs")
        return self


class AudioSpec(_Spec):
    sample_rate: Literal[8000, 16000, 22050, 32000, 44100, 48000] = 16000
    channels: int = Field(default=1, ge=1, le=8)
    chunk_seconds: float = Field(default=1.0, ge=0.5, le=5.0)
    overlap_seconds: float = Field(default=0.0, ge=0.0, le=2.5)
    thresholds: AudioThresholds = Field(default_factory=lambda: AudioThresholds.model_validate({}))

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> AudioSpec:
        if self.overlap_seconds >= self.chunk_seconds:
            raise ValueError("audio.overlapSeconds must be below chunkSeconds")
        return self


class CaptureProfileSpec(_Spec):
    """spec of a CaptureProfile: a camera that feeds InferenceModels, or a microphone with its own Deployment."""

    type: Literal["video", "audio"]
    device: str | None = Field(default=None, min_length=1, max_length=256)
    video: VideoSpec | None = None
    audio: AudioSpec | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _block_matches_type(self) -> CaptureProfileSpec:
        if self.type == "video":
            if self.video is None or self.audio is not None:
                raise ValueError("type video requires a video block and no audio block")
            if self.device is None and self.video.source is None:
                raise ValueError("type video requires device or video.source")
            if self.device is not None and not self.device.startswith("/dev/"):
                raise ValueError("a video device is a path under /dev/, e.g. /dev/video0")
        else:
            if self.audio is None or self.video is not None:
                raise ValueError("type audio requires an audio block and no video block")
            if self.device is None:
                raise ValueError("type audio requires device (an ALSA name such as hw:1,0, or a WAV path)")
        return self


# ---------------------------------------------------------------------------------------------- parsing


def _explain(kind: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"{where}: {err['msg']}")
    return f"invalid {kind} spec: " + "; ".join(parts)


def parse_inference_model(spec: Mapping[str, Any]) -> InferenceModelSpec:
    """Parse a CR spec dict; a bad one raises SpecError(InvalidSpec) with every problem in the message."""
    try:
        return InferenceModelSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise SpecError("InvalidSpec", _explain("InferenceModel", exc)) from exc


def parse_capture_profile(spec: Mapping[str, Any]) -> CaptureProfileSpec:
    """Parse a CR spec dict; a bad one raises SpecError(InvalidSpec) with every problem in the message."""
    try:
        return CaptureProfileSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise SpecError("InvalidSpec", _explain("CaptureProfile", exc)) from exc
