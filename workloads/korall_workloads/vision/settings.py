"""The vision service's configuration: the one place that reads the environment.

Every field is read from the variable named in `korall_contract.VisionEnv` (the operator sets the same names)
and validated at start, so a typo stops the service with one clear line instead of failing on the first
request. Fields can also be passed by name (`VisionSettings(score_th=0.3)`), which the tests and benches use.

The camera helper adds its own CAPTURE_* settings next to this class; nothing here reads them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from korall_contract import MODELS_DIR_IN_IMAGE, VISION_PORT, Accelerator, VisionEnv
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from korall_workloads.common.settings import ServiceSettings, from_contract

DEFAULT_MODEL_FILE = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
DEFAULT_LABELS_FILE = "coco_labels.txt"


def default_models_dir() -> Path:
    """The repository's models/ folder when run from a checkout, else the image's /models."""
    checkout = Path(__file__).resolve().parents[3] / "models"
    if (checkout / "manifest.json").is_file():
        return checkout
    return Path(MODELS_DIR_IN_IMAGE)


def usable_cores() -> int:
    """The cores this process may keep busy: its CPU affinity (a container's cpuset), or fewer under a cgroup CPU
    quota (a container's CPU limit), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = cpu_limit_cores()
    return min(cores, quota) if quota is not None else cores


def cpu_limit_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole cores the cgroup's CPU quota allows (v2 cpu.max, v1 cpu.cfs_quota_us), rounded up; None without one."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else max(1, math.ceil(quota_us / period_us))


def auto_num_threads(interpreters: int = 1) -> int:
    """Threads per CPU interpreter: the cores shared out among the interpreters; one interpreter alone takes all
    cores but one (the spare core decodes and resizes the next request while the model runs)."""
    cores = usable_cores()
    return max(1, cores - 1) if interpreters <= 1 else max(1, cores // interpreters)


MIB = 1024 * 1024


class VisionSettings(ServiceSettings):
    """Configuration of the vision service (environment names from `korall_contract.VisionEnv`)."""

    model_config = SettingsConfigDict(  # fields named model_* are ours, not pydantic's namespace
        populate_by_name=True, protected_namespaces=(), extra="ignore", validate_default=True
    )

    models_dir: Path = Field(
        default_factory=default_models_dir,
        validation_alias=VisionEnv.MODELS_DIR,
        description="Folder with the model files and manifest.json; listed by GET /models.",
    )
    model_path: str = Field(
        default=DEFAULT_MODEL_FILE,
        validation_alias=VisionEnv.MODEL_PATH,
        description="Model file: a path, or a bare file name inside MODELS_DIR.",
    )
    labels_path: str | None = Field(
        default=None,
        validation_alias=VisionEnv.LABELS_PATH,
        description="Labels file (`id  name` lines); default: the manifest's labels, else coco_labels.txt.",
    )
    model_sha256: str | None = Field(
        default=None,
        validation_alias=VisionEnv.MODEL_SHA256,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected sha256 of MODEL_PATH; default: the one in manifest.json. A mismatch refuses to load.",
    )
    score_th: float = from_contract(VisionEnv.SCORE_TH)
    topk: int = from_contract(VisionEnv.TOPK)
    accelerator: Accelerator = from_contract(VisionEnv.ACCELERATOR)
    edgetpu_device: str = from_contract(VisionEnv.EDGETPU_DEVICE, pattern=r"^(usb|pci)(:\d+)?$")
    num_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        validation_alias=VisionEnv.NUM_THREADS,
        description="Threads of each CPU interpreter; 0: the cores shared out among the interpreters (one "
        "interpreter alone: all cores but one).",
    )
    num_interpreters: int = Field(
        default=0,
        ge=0,
        le=64,
        validation_alias=VisionEnv.NUM_INTERPRETERS,
        description="Interpreters serving requests side by side; 0: one per core on the CPU, one on an Edge TPU "
        "(a pod holds one TPU; more interpreters on one TPU only take turns).",
    )
    infer_queue_max: int = Field(
        default=0,
        ge=0,
        le=10_000,
        validation_alias=VisionEnv.INFER_QUEUE_MAX,
        description="/infer requests in progress at once (reading, decoding, queued, running); one more is shed "
        "with 503 `overloaded` and Retry-After. 0: eight per core (about eight invokes of waiting at most).",
    )
    upload_budget_bytes: int = Field(
        default=64 * MIB,
        ge=1024,
        validation_alias=VisionEnv.UPLOAD_BUDGET_BYTES,
        description="Request bodies held in memory at once, all requests together; an upload that does not fit is "
        "shed with 503 `overloaded`. At least MAX_UPLOAD_BYTES.",
    )
    decode_budget_bytes: int = Field(
        default=96 * MIB,
        ge=MIB,
        validation_alias=VisionEnv.DECODE_BUDGET_BYTES,
        description="Memory one image decode may take, estimated from its header (size, mode, format) before "
        "decoding; more: 413 `image_too_large`.",
    )
    decode_serial_bytes: int = Field(
        default=16 * MIB,
        ge=0,
        validation_alias=VisionEnv.DECODE_SERIAL_BYTES,
        description="Decodes estimated above this run one at a time, on a thread of their own; smaller ones (a "
        "photo of a few megapixels) run side by side.",
    )
    memory_limit_bytes: int | None = Field(
        default=None,
        ge=0,
        validation_alias=VisionEnv.MEMORY_LIMIT_BYTES,
        description="The container's memory limit (the operator passes limits.memory through the Downward API); "
        "unset: the cgroup's limit, if any. At start the worst case of the limits above must fit in it.",
    )
    infer_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        validation_alias=VisionEnv.INFER_TIMEOUT_S,
        description="Deadline for one inference (decode to detections); past it the request gets 504.",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        validation_alias=VisionEnv.MAX_UPLOAD_BYTES,
        description="Largest request body; larger uploads get 413 while they stream in.",
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        ge=1,
        validation_alias=VisionEnv.MAX_IMAGE_PIXELS,
        description="Largest width*height decoded (decompression-bomb guard); larger images get 413.",
    )
    self_test_golden_set: Path | None = Field(
        default=None,
        validation_alias=VisionEnv.SELF_TEST_GOLDEN_SET,
        description="A golden set (folder with golden.json, or a tar archive of one) run once after the warm-up: "
        "/ready stays 503 unless every case passes. Unset: no self-test.",
    )
    port: int = Field(default=VISION_PORT, ge=1, le=65535, validation_alias=VisionEnv.PORT, description="Listen port.")

    @property
    def resolved_model_path(self) -> Path:
        path = Path(self.model_path)
        return path if path.is_absolute() or path.parent != Path(".") else self.models_dir / path

    @property
    def resolved_num_threads(self) -> int:
        """Threads of each CPU interpreter, with `resolved_interpreters("cpu")` of them."""
        return self.num_threads or auto_num_threads(self.resolved_interpreters("cpu"))

    def resolved_interpreters(self, accelerator: str) -> int:
        """How many interpreters run on `accelerator` (cpu or edgetpu)."""
        if accelerator == "edgetpu":
            return 1
        return self.num_interpreters or usable_cores()

    @property
    def resolved_infer_queue_max(self) -> int:
        return self.infer_queue_max or 8 * usable_cores()

    @model_validator(mode="after")
    def _budgets_hold_one_request(self) -> VisionSettings:
        if self.upload_budget_bytes < self.max_upload_bytes:
            raise ValueError(
                f"UPLOAD_BUDGET_BYTES ({self.upload_budget_bytes}) must be at least MAX_UPLOAD_BYTES "
                f"({self.max_upload_bytes}): one upload of the largest size must fit"
            )
        return self

    @property
    def edgetpu_device_option(self) -> str:
        """The value libedgetpu's `device` option expects (`pci` alone means the first PCIe device)."""
        return "pci:0" if self.edgetpu_device == "pci" else self.edgetpu_device
