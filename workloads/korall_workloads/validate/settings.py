"""The validator's configuration: the one place it reads the environment (names from korall_contract.ValidateEnv).

A bad value ends the run with result Error, reason InvalidConfiguration, and one line naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from korall_contract import GOLDEN_SET_IN_IMAGE, MODELS_DIR_IN_IMAGE, ValidateEnv
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


def _checkout(folder: str, fallback: str) -> Path:
    """The repository's folder when run from a checkout, else the image's."""
    checkout = Path(__file__).resolve().parents[3] / "models" / folder
    return checkout if checkout.exists() else Path(fallback)


class ValidateSettings(BaseSettings):
    """Configuration of one validation run."""

    model_config = SettingsConfigDict(
        populate_by_name=True, protected_namespaces=(), extra="ignore", validate_default=True
    )

    model_path: Path = Field(
        validation_alias=ValidateEnv.MODEL_PATH,
        description="The model under test: a bundled file, or the node cache's sha256/<hex> after model-fetch.",
    )
    model_sha256: str = Field(
        validation_alias=ValidateEnv.MODEL_SHA256,
        pattern=SHA256_PATTERN,
        description="Its sha256, required: the result is recorded under it, and a file that differs fails.",
    )
    accelerator: Literal["cpu", "edgetpu"] = Field(
        default="cpu",
        validation_alias=ValidateEnv.ACCELERATOR,
        description="What the model is for: an edgetpu model must be an Edge TPU build, a cpu model must not.",
    )
    labels_path: Path | None = Field(
        default=None,
        validation_alias=ValidateEnv.LABELS_PATH,
        description="Labels file; default: the models folder's manifest labels, else coco_labels.txt.",
    )
    models_dir: Path = Field(
        default_factory=lambda: _checkout("", MODELS_DIR_IN_IMAGE),
        validation_alias=ValidateEnv.MODELS_DIR,
        description="The bundled models (their manifest names an Edge TPU build's CPU twin).",
    )
    golden_set: Path = Field(
        default_factory=lambda: _checkout("golden", GOLDEN_SET_IN_IMAGE),
        validation_alias=ValidateEnv.GOLDEN_SET,
        description="Golden set: a folder with golden.json, or a tar archive of one. Default: the image's.",
    )
    twin_model_path: Path | None = Field(
        default=None,
        validation_alias=ValidateEnv.TWIN_MODEL_PATH,
        description="Edge TPU builds: the CPU build of the same model, run on the golden set instead.",
    )
    twin_model_sha256: str | None = Field(
        default=None,
        validation_alias=ValidateEnv.TWIN_MODEL_SHA256,
        pattern=SHA256_PATTERN,
        description="The twin's expected sha256.",
    )
    num_threads: int = Field(default=0, ge=0, le=64, validation_alias=ValidateEnv.NUM_THREADS)
    termination_message_path: Path = Field(
        default=Path("/dev/termination-log"),
        validation_alias=ValidateEnv.TERMINATION_MESSAGE_PATH,
        description="Where the JSON result goes (Kubernetes reads it; an absent file is not created).",
    )
    log_json: bool = Field(default=False, validation_alias=ValidateEnv.LOG_JSON)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=ValidateEnv.LOG_LEVEL
    )
