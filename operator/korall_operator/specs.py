"""Typed views of the `spec` of korall's two custom resources, and the one error a bad spec raises.

The CRDs in `crds/` validate these same rules at admission on a real cluster (openAPIV3Schema ranges, enums,
defaults and CEL rules). The operator parses every spec through these models anyway, because it must never
trust its input: a CR may predate a schema change, and the test emulator (kmock) validates nothing. When the
two disagree, the CRD is the reference; `tests/operator/test_crds.py` checks samples and bad specs against both.

Field names are camelCase in Kubernetes and snake_case here (`populate_by_name=True` accepts both).
Defaults match the CRD defaults, so a spec the API server defaulted and a raw one parse to the same model. A field
that becomes a workload variable takes its range, choices and default from the contract (`spec_field`), as the
CRD schema and the workload do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from korall_contract import (
    AudioEnv,
    EventsEnv,
    PixelFormat,
    QoS,
    SampleRate,
    ScheduledAccelerator,
    Setting,
    TpuInterface,
    VisionEnv,
    check_topic_prefix,
    parse_broker_url,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from korall_operator.kube_names import (
    MAX_QUANTITY_LENGTH,
    MAX_RESOURCES,
    RESOURCE_NAMES,
    NodeSelector,
    is_qualified_name,
)

SHA256_RE = r"^[a-f0-9]{64}$"
MODEL_FILE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.tflite$"
LABELS_FILE_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.txt$"


def spec_field(setting: Setting, **overrides: Any) -> Any:
    """The pydantic field of a spec field that becomes a workload variable: the contract's CRD default, bounds
    (its choices come from the field's type, the contract's Literal for it)."""
    kwargs: dict[str, Any] = {"default": setting.crd_default}
    if setting.minimum is not None:
        kwargs["ge"] = setting.minimum
    if setting.maximum is not None:
        kwargs["le"] = setting.maximum
    return Field(**{**kwargs, **overrides})


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


OBJECT_NAME_RE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SECRET_KEY_RE = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(_Spec):
    """A key of a Secret in the same namespace (read by the kubelet into the pod, never by the operator)."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_RE)
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_RE)


class ModelSource(_Spec):
    """Where the model comes from: a file bundled in the vision image, or a URL or S3 object with its sha256,
    downloaded on the node before the service starts (docs/model-delivery.md)."""

    file: str | None = Field(default=None, pattern=MODEL_FILE_RE, description="A .tflite file in the image's /models.")
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    s3: str | None = Field(default=None, pattern=r"^s3://[a-z0-9.-]{3,63}/\S+$", max_length=2048)
    sha256: str | None = Field(
        default=None, pattern=SHA256_RE, description="Expected checksum; required for url and s3."
    )
    s3_credentials: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    """s3: the Secret in the operator's namespace that holds the credentials; unset: the chart's default."""
    auth_header_secret: SecretKeyRef | None = None
    """url: a Secret key holding `Name: value` header lines sent with the download (e.g. Authorization)."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        given = [k for k in ("file", "url", "s3") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of model.file, model.url or model.s3 must be set")
        if given[0] in ("url", "s3") and self.sha256 is None:
            raise ValueError("model.url and model.s3 require model.sha256")
        if self.s3_credentials is not None and self.s3 is None:
            raise ValueError("model.s3Credentials may only be set with model.s3")
        if self.auth_header_secret is not None and self.url is None:
            raise ValueError("model.authHeaderSecret may only be set with model.url")
        return self

    @property
    def remote(self) -> bool:
        """Downloaded on the node (url or s3), as opposed to bundled in the image."""
        return self.file is None

    @property
    def display(self) -> str:
        """The model as a human names it: the file name, or the URL / S3 URI."""
        return self.file or self.url or self.s3 or ""


class MqttSpec(_Spec):
    """The broker events go to (docs/events.md)."""

    url: str = Field(max_length=512)
    topic_prefix: str = spec_field(EventsEnv.TOPIC_PREFIX, max_length=128)
    qos: QoS = spec_field(EventsEnv.QOS)
    credentials_secret: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME_RE)
    tls_secret: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME_RE)
    client_certificate: bool = False

    # The contract's rule, which the workload's settings call too and the CRD's patterns say: a value the API server
    # admitted but the workload refused would crash-loop its pods.
    @field_validator("url")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topics(cls, value: str) -> str:
        return check_topic_prefix(value)

    @model_validator(mode="after")
    def _certificate_needs_a_secret(self) -> MqttSpec:
        if self.client_certificate and self.tls_secret is None:
            raise ValueError("events.mqtt.clientCertificate needs events.mqtt.tlsSecret")
        return self


class EventsSpec(_Spec):
    """Where a workload's events go, off the node: an MQTT broker, through a spool on the node."""

    mqtt: MqttSpec
    durable_spool: bool = True


class GoldenSet(_Spec):
    """A golden set of one's own (docs/catalog.md): a ConfigMap of this namespace holding golden.json and its images
    (binaryData), or a tar archive of such a folder at a URL, with its sha256."""

    config_map: str | None = Field(default=None, min_length=1, max_length=253, pattern=OBJECT_NAME_RE)
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    sha256: str | None = Field(default=None, pattern=SHA256_RE)

    @model_validator(mode="after")
    def _one_source(self) -> GoldenSet:
        if (self.config_map is None) == (self.url is None):
            raise ValueError("validation.goldenSet: exactly one of configMap or url must be set")
        if self.url is not None and self.sha256 is None:
            raise ValueError("validation.goldenSet.url requires validation.goldenSet.sha256")
        return self


class CpuTwin(_Spec):
    """The CPU build of the same model as an Edge TPU build: the validator runs the golden set on it."""

    file: str | None = Field(default=None, pattern=MODEL_FILE_RE)
    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    s3: str | None = Field(default=None, pattern=r"^s3://[a-z0-9.-]{3,63}/\S+$", max_length=2048)
    sha256: str | None = Field(default=None, pattern=SHA256_RE)
    s3_credentials: str | None = Field(default=None, min_length=1, max_length=253, pattern=OBJECT_NAME_RE)

    @model_validator(mode="after")
    def _one_source(self) -> CpuTwin:
        if [self.file, self.url, self.s3].count(None) != 2:
            raise ValueError("validation.cpuTwin: exactly one of file, url or s3 must be set")
        if self.file is None and self.sha256 is None:
            raise ValueError("validation.cpuTwin.url and validation.cpuTwin.s3 require validation.cpuTwin.sha256")
        return self

    def as_source(self) -> ModelSource:
        """The twin as a model source (what the model-fetch init container and the link signer take)."""
        return ModelSource.model_validate(self.model_dump(exclude_none=True))


class ValidationSpec(_Spec):
    """How a model is validated before it may serve in production, and how long its rollout may take."""

    golden_set: GoldenSet | None = None
    """None: the vision image's default golden set (COCO labels)."""
    cpu_twin: CpuTwin | None = None
    self_test: bool = True
    """The serving pods run the golden set once before they report ready (SELF_TEST_GOLDEN_SET)."""
    rollout_deadline_seconds: int = Field(default=300, ge=5, le=3600)
    """Production: a new model whose pods are not all ready this long after its rollout began is rolled back."""


class CaptureProfileRef(_Spec):
    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_RE)


class SecretRef(_Spec):
    """A Secret in the same namespace, by name."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_RE)


class AuthSpec(_Spec):
    """Who may call the workload's HTTP API: the Secret of token hashes its pods mount (docs/security.md)."""

    token_secret_ref: SecretRef | None = None


Quantity = StrictInt | StrictFloat | Annotated[str, Field(max_length=MAX_QUANTITY_LENGTH)]  # a long text is no number


class Resources(_Spec):
    """The container's requests and limits (Kubernetes quantities), passed through as given."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=MAX_RESOURCES)
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=MAX_RESOURCES)

    @model_validator(mode="after")
    def _resource_names(self) -> Resources:
        if not all(is_qualified_name(name) for name in [*self.requests, *self.limits]):
            raise ValueError(RESOURCE_NAMES)
        return self


class InferenceModelSpec(_Spec):
    """spec of an InferenceModel: one vision Deployment serving one model."""

    model: ModelSource
    labels: str = Field(default="coco_labels.txt", pattern=LABELS_FILE_RE)
    score_threshold: float = spec_field(VisionEnv.SCORE_TH)
    top_k: int = spec_field(VisionEnv.TOPK)
    accelerator: ScheduledAccelerator = spec_field(VisionEnv.ACCELERATOR)
    tpu_interface: TpuInterface | None = spec_field(VisionEnv.EDGETPU_DEVICE)
    capture_profile_ref: CaptureProfileRef | None = None
    replicas: int = Field(default=1, ge=0, le=100)
    node_selector: NodeSelector = Field(default_factory=dict)
    stage: Literal["test", "demo", "production"] = "test"
    resources: Resources = Field(default_factory=lambda: Resources.model_validate({}))
    auth: AuthSpec | None = None
    events: EventsSpec | None = None
    validation: ValidationSpec = Field(default_factory=lambda: ValidationSpec.model_validate({}))

    @model_validator(mode="after")
    def _interface_needs_tpu(self) -> InferenceModelSpec:
        if self.tpu_interface is not None and self.accelerator != "edgetpu":
            raise ValueError("tpuInterface may only be set when accelerator is edgetpu")
        if self.validation.cpu_twin is not None and self.accelerator != "edgetpu":
            raise ValueError("validation.cpuTwin may only be set when accelerator is edgetpu")
        return self

    @property
    def effective_tpu_interface(self) -> Literal["usb", "pci"]:
        """The TPU interface in use; USB when an edgetpu model does not say."""
        return self.tpu_interface or "usb"


# ---------------------------------------------------------------------------------------------- CaptureProfile


class VideoSpec(_Spec):
    width: int = spec_field(VisionEnv.CAPTURE_WIDTH)
    height: int = spec_field(VisionEnv.CAPTURE_HEIGHT)
    fps: int = spec_field(VisionEnv.CAPTURE_FPS)
    pixel_format: PixelFormat = spec_field(VisionEnv.CAPTURE_PIXEL_FORMAT)
    sample_every: int = spec_field(VisionEnv.CAPTURE_SAMPLE_EVERY)
    buffer_frames: int = spec_field(VisionEnv.CAPTURE_BUFFER_FRAMES)
    source: str | None = Field(default=None, min_length=1, max_length=4096)
    source_secret_ref: SecretKeyRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> VideoSpec:
        if self.source is not None and self.source_secret_ref is not None:
            raise ValueError("video.source and video.sourceSecretRef are exclusive")
        return self


class AudioThresholds(_Spec):
    silence_dbfs: float = spec_field(AudioEnv.AUDIO_SILENCE_DBFS)
    loud_dbfs: float = spec_field(AudioEnv.AUDIO_LOUD_DBFS)

    @model_validator(mode="after")
    def _ordered(self) -> AudioThresholds:
        if self.silence_dbfs >= self.loud_dbfs:
            raise ValueError("audio.thresholds.silenceDbfs must be below loudDbfs")
        return self


class AudioSpec(_Spec):
    sample_rate: SampleRate = spec_field(AudioEnv.AUDIO_SAMPLE_RATE)
    channels: int = spec_field(AudioEnv.AUDIO_CHANNELS)
    chunk_seconds: float = spec_field(AudioEnv.AUDIO_CHUNK_S)
    overlap_seconds: float = spec_field(AudioEnv.AUDIO_OVERLAP_S)
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
    node_selector: NodeSelector = Field(default_factory=dict)
    auth: AuthSpec | None = None
    events: EventsSpec | None = None

    @model_validator(mode="after")
    def _block_matches_type(self) -> CaptureProfileSpec:
        if self.type == "video":
            if self.video is None or self.audio is not None:
                raise ValueError("type video requires a video block and no audio block")
            if self.device is None and self.video.source is None and self.video.source_secret_ref is None:
                raise ValueError("type video requires device, video.source or video.sourceSecretRef")
            if self.auth is not None:
                raise ValueError("auth is for audio profiles; a camera's pod takes its InferenceModel's auth")
            if self.device is not None and not self.device.startswith("/dev/"):
                raise ValueError("a video device is a path under /dev/, e.g. /dev/video0")
            if self.events is not None:
                raise ValueError(
                    "events may only be set on an audio profile (a camera's events come from its InferenceModel)"
                )
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
