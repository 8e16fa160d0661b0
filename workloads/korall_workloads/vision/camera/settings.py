"""Camera ingest configuration: the one place that reads the CAPTURE_* environment.

The operator sets these variables from a video CaptureProfile; a person sets the same ones by hand
(`CAPTURE_SOURCE=demo.avi make run`). No CAPTURE_SOURCE means no camera loop at all.
"""

from __future__ import annotations

from korall_contract import PixelFormat, VisionEnv
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from korall_workloads.common.settings import from_contract


class CaptureSettings(BaseSettings):
    """What to capture, at which profile, and how hard to try when the source goes away."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    source: str | None = Field(
        default=None,
        validation_alias=VisionEnv.CAPTURE_SOURCE,
        description="/dev/video0 or an index, a GStreamer pipeline (contains '!'), an rtsp:// or http:// URL, "
        "or a video file. Empty: no camera loop.",
    )
    width: int = from_contract(VisionEnv.CAPTURE_WIDTH)
    height: int = from_contract(VisionEnv.CAPTURE_HEIGHT)
    fps: int = from_contract(VisionEnv.CAPTURE_FPS)
    pixel_format: PixelFormat = from_contract(
        VisionEnv.CAPTURE_PIXEL_FORMAT,
        description="fourcc requested from a V4L2 device; MJPG is compressed on the wire (USB 2 friendly), "
        "YUYV is raw and cheaper to decode.",
    )
    sample_every: int = from_contract(
        VisionEnv.CAPTURE_SAMPLE_EVERY,
        description="infer on every Nth captured frame: N = capture fps / target detection rate.",
    )
    buffer_frames: int = from_contract(
        VisionEnv.CAPTURE_BUFFER_FRAMES,
        description="ring buffer between capture and inference; the oldest frame is dropped when it is full.",
    )
    loop: bool = Field(
        default=False,
        validation_alias=VisionEnv.CAPTURE_LOOP,
        description="video files only: rewind at the end; otherwise the end of a file is an end of stream and "
        "the pipeline reconnects (which replays it) after the backoff.",
    )
    stall_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        validation_alias=VisionEnv.CAPTURE_STALL_TIMEOUT_S,
        description="no frame for this long: the camera is reported stalled; it is also the read timeout given to "
        "OpenCV for devices and network streams, after which the pipeline reconnects.",
    )
    reconnect_min_s: float = Field(default=0.5, gt=0, le=600, validation_alias=VisionEnv.CAPTURE_RECONNECT_MIN_S)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600, validation_alias=VisionEnv.CAPTURE_RECONNECT_MAX_S)
    max_reconnects: int = Field(
        default=0,
        ge=0,
        validation_alias=VisionEnv.CAPTURE_MAX_RECONNECTS,
        description="consecutive failed attempts before the camera is given up as failed; 0 retries forever "
        "(a USB camera may be plugged back in).",
    )

    motion_min_change: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        validation_alias=VisionEnv.CAPTURE_MOTION_MIN_CHANGE,
        description="motion gating: skip inference when less than this share of the picture changed since the "
        "last inferred frame (0.005 = 0.5 %); 0 turns gating off.",
    )
    motion_max_skip_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        validation_alias=VisionEnv.CAPTURE_MOTION_MAX_SKIP_S,
        description="motion gating: infer at least this often even in a still scene, so results stay fresh.",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("pixel_format", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _backoff_order(self) -> CaptureSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"{VisionEnv.CAPTURE_RECONNECT_MAX_S} ({self.reconnect_max_s}) must be >= "
                f"{VisionEnv.CAPTURE_RECONNECT_MIN_S} ({self.reconnect_min_s})"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def reconnect_delay(self, failures: int) -> float:
        """Exponential backoff: min, 2*min, 4*min ... capped at max (failures counts from 1).

        The exponent stops growing at 1000: failures count up without end while a camera stays unplugged, and
        min * 2**1024 no longer fits a float.
        """
        return float(min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(max(0, failures - 1), 1000)))
