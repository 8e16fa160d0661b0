"""The vision service's configuration: the one place that reads the environment.

Every field is read from the variable named in `korall_contract.VisionEnv` (the operator sets the same names)
and validated at start, so a typo stops the service with one clear line instead of failing on the first
request. Fields can also be passed by name (`VisionSettings(score_th=0.3)`), which the tests and benches use.

The camera helper adds its own CAPTURE_* settings next to this class; nothing here reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

from korall_contract import MODELS_DIR_IN_IMAGE, VISION_PORT, Accelerator, VisionEnv
from pydantic import Field
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


def auto_num_threads() -> int:
    """All cores but one: the spare core decodes and resizes the next request while the model runs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


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
        description="CPU interpreter threads; 0 = all cores but one.",
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
        return self.num_threads or auto_num_threads()

    @property
    def edgetpu_device_option(self) -> str:
        """The value libedgetpu's `device` option expects (`pci` alone means the first PCIe device)."""
        return "pci:0" if self.edgetpu_device == "pci" else self.edgetpu_device
