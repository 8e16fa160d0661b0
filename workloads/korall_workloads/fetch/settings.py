"""The downloader's configuration: the one place it reads the environment, with every range and default.

Names come from `korall_contract.FetchEnv` (the operator sets them on the init container). A bad value stops
the downloader before any request with one line naming the variable (reason InvalidConfiguration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from korall_contract import DEFAULT_MODEL_CACHE_DIR, MODEL_CACHE_KEEP_S_RANGE, MODEL_CACHE_MAX_BYTES_LIMIT, FetchEnv
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class FetchSettings(BaseSettings):
    """Configuration of one model download (environment names from `korall_contract.FetchEnv`)."""

    model_config = SettingsConfigDict(
        populate_by_name=True, protected_namespaces=(), extra="ignore", validate_default=True
    )

    sha256: str = Field(
        validation_alias=FetchEnv.MODEL_SHA256,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected sha256 of the model (64 hex digits); required: an unverifiable file is never kept.",
    )
    url_file: Path | None = Field(
        default=None,
        validation_alias=FetchEnv.MODEL_URL_FILE,
        description="File holding the link (the operator's link Secret, mounted); re-read before every attempt.",
    )
    url: str | None = Field(
        default=None,
        validation_alias=FetchEnv.MODEL_URL,
        description="The link itself, used when MODEL_URL_FILE is unset.",
    )
    headers_file: Path | None = Field(
        default=None,
        validation_alias=FetchEnv.MODEL_HEADERS_FILE,
        description="Optional file of `Name: value` lines sent with every request (an auth header); never logged.",
    )
    cache_dir: Path = Field(
        default=Path(DEFAULT_MODEL_CACHE_DIR),
        validation_alias=FetchEnv.MODEL_CACHE_DIR,
        description="Cache root; the model is kept at <dir>/sha256/<hex>.",
    )
    cache_max_bytes: int = Field(
        default=4096 * MIB,
        ge=0,
        le=MODEL_CACHE_MAX_BYTES_LIMIT,
        validation_alias=FetchEnv.MODEL_CACHE_MAX_BYTES,
        description="Budget of the node's cache: past it, the models used least recently are removed (never one in "
        "use or used within MODEL_CACHE_KEEP_S); 0: never remove anything.",
    )
    cache_keep_s: float = Field(
        default=86400.0,
        ge=MODEL_CACHE_KEEP_S_RANGE[0],
        le=MODEL_CACHE_KEEP_S_RANGE[1],
        validation_alias=FetchEnv.MODEL_CACHE_KEEP_S,
        description="A model used more recently than this (a pod started with it, a collection found it in use) is "
        "never removed.",
    )
    max_bytes: int = Field(
        default=512 * MIB,
        ge=1,
        le=64 * 1024 * MIB,
        validation_alias=FetchEnv.MODEL_MAX_BYTES,
        description="Largest model accepted; a larger one is refused from its length, or as soon as it streams past.",
    )
    attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        validation_alias=FetchEnv.MODEL_FETCH_ATTEMPTS,
        description="Consecutive failed attempts before giving up; an attempt that moved bytes resets the count.",
    )
    backoff_min_s: float = Field(
        default=1.0,
        gt=0.0,
        le=60.0,
        validation_alias=FetchEnv.MODEL_FETCH_BACKOFF_MIN_S,
        description="Delay before the first retry; doubled per failure up to MODEL_FETCH_BACKOFF_MAX_S.",
    )
    backoff_max_s: float = Field(
        default=30.0,
        gt=0.0,
        le=600.0,
        validation_alias=FetchEnv.MODEL_FETCH_BACKOFF_MAX_S,
        description="Cap of the retry delay.",
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=600.0,
        validation_alias=FetchEnv.MODEL_FETCH_TIMEOUT_S,
        description="Connect timeout and the longest silence while reading; past it the attempt fails and resumes.",
    )
    lock_timeout_s: float = Field(
        default=900.0,
        gt=0.0,
        le=86400.0,
        validation_alias=FetchEnv.MODEL_FETCH_LOCK_TIMEOUT_S,
        description="Longest wait while another process on the node downloads the same model.",
    )
    termination_message_path: Path = Field(
        default=Path("/dev/termination-log"),
        validation_alias=FetchEnv.TERMINATION_MESSAGE_PATH,
        description="Where the one-line outcome is written (only if the file exists: Kubernetes creates it).",
    )
    log_json: bool = Field(default=False, validation_alias=FetchEnv.LOG_JSON, description="JSON log lines.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=FetchEnv.LOG_LEVEL, description="Log level."
    )

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.strip() if value is not None else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> FetchSettings:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError(
                f"{FetchEnv.MODEL_FETCH_BACKOFF_MIN_S} must not exceed {FetchEnv.MODEL_FETCH_BACKOFF_MAX_S}"
            )
        return self
