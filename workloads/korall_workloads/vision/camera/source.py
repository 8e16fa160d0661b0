"""Frame sources: the one module that talks to cameras, streams and video files (through OpenCV).

`open_source(settings)` classifies CAPTURE_SOURCE, opens it, requests the profile (size, fps, fourcc) and
reads back what the device actually negotiated. A source's `read()` returns one BGR frame or raises:
`EndOfStream` when a file or stream ends, `SourceError` when the device fails. The pipeline above never
sees an OpenCV handle, so a test can replace the whole module with a `FrameSource` of its own.

Video files stand in for cameras: they are paced at their native frame rate (a camera cannot deliver
frames faster than it shoots them) and optionally loop.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from korall_workloads.common.redact import redact_text

from .settings import CaptureSettings

log = logging.getLogger(__name__)

_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceKind(enum.StrEnum):
    DEVICE = "device"  # V4L2: /dev/videoN or an index
    GSTREAMER = "gstreamer"  # a pipeline string ending in appsink
    URL = "url"  # RTSP/HTTP/... through FFmpeg
    FILE = "file"  # a video file, paced at its native fps


class SourceError(Exception):
    """The source could not be opened or stopped delivering; `permanent` ones are not worth retrying."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class EndOfStream(SourceError):
    """A file reached its end or a stream closed cleanly."""

    def __init__(self, reason: str = "end of stream") -> None:
        super().__init__(reason)


@dataclass(frozen=True)
class Negotiated:
    """What the source delivers, as read back after opening (may differ from what was requested)."""

    kind: str
    backend: str
    width: int
    height: int
    fps: float
    fourcc: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FrameSource(Protocol):
    """An open source of BGR frames."""

    description: str
    negotiated: Negotiated

    def read(self) -> np.ndarray: ...

    def close(self) -> None: ...


def classify(source: str) -> SourceKind:
    """Tell what kind of source a CAPTURE_SOURCE string names (pure: no device is touched)."""
    text = source.strip()
    if text.isdigit() or text.startswith("/dev/video"):
        return SourceKind.DEVICE
    if "!" in text:
        return SourceKind.GSTREAMER
    if text.lower().startswith(_URL_SCHEMES):
        return SourceKind.URL
    return SourceKind.FILE


def fourcc_to_str(value: float) -> str:
    code = int(value)
    if code <= 0:
        return ""
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")


def has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def redact(source: str) -> str:
    """The source as it may be shown (logs, /health, /camera): credentials and query values hidden
    (`common.redact`: `rtsp://user:pa@ss@host` -> `rtsp://***@host`, `?user=admin&pwd=x` -> `?user=***&pwd=***`)."""
    return redact_text(source)


class OpenCvSource:
    """A cv2.VideoCapture with the pipeline's error semantics, pacing and looping for files."""

    def __init__(self, settings: CaptureSettings, source: str) -> None:
        self._settings = settings
        self.kind = classify(source)
        self.description = f"{self.kind} {redact(source)}"
        self._cap = self._open(source)
        self.negotiated = self._read_back()
        self._paced = self.kind is SourceKind.FILE
        self._interval = 1.0 / (self.negotiated.fps if self.negotiated.fps > 0 else settings.fps)
        self._next_due = 0.0
        self._closed = threading.Event()

    def _open(self, source: str) -> cv2.VideoCapture:
        s = self._settings
        timeout_ms = int(s.stall_timeout_s * 1000)
        if self.kind is SourceKind.DEVICE:
            target: int | str = int(source) if source.isdigit() else source
            path = f"/dev/video{target}" if isinstance(target, int) else target
            if not os.path.exists(path):
                raise SourceError(f"camera device {path} does not exist (unplugged, or not mapped into the pod?)")
            if not os.access(path, os.R_OK | os.W_OK):
                raise SourceError(f"camera device {path} is not accessible (add the user to the 'video' group)")
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
            if cap.isOpened():
                # Order matters for V4L2: the format first, then the size, then the rate.
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*s.pixel_format))
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
                cap.set(cv2.CAP_PROP_FPS, s.fps)
                cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms)
        elif self.kind is SourceKind.GSTREAMER:
            if not has_gstreamer():
                raise SourceError(
                    "a GStreamer pipeline was given but this OpenCV build has no GStreamer support "
                    "(opencv-python-headless from PyPI is built without it); use a device, URL or file",
                    permanent=True,
                )
            cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
        elif self.kind is SourceKind.URL:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        else:
            if not os.path.isfile(source):
                raise SourceError(f"video file {source} does not exist")
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"OpenCV could not open {self.description}")
        return cap

    def _read_back(self) -> Negotiated:
        cap = self._cap
        negotiated = Negotiated(
            kind=str(self.kind),
            backend=cap.getBackendName(),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            fourcc=fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC)),
        )
        s = self._settings
        if self.kind is SourceKind.DEVICE and (
            (negotiated.width, negotiated.height) != (s.width, s.height)
            or abs(negotiated.fps - s.fps) > 0.5
            or negotiated.fourcc != s.pixel_format
        ):
            log.warning(
                "camera negotiated %dx%d @ %.1f fps %s instead of the requested %dx%d @ %.1f fps %s",
                negotiated.width,
                negotiated.height,
                negotiated.fps,
                negotiated.fourcc,
                s.width,
                s.height,
                s.fps,
                s.pixel_format,
            )
        return negotiated

    def read(self) -> np.ndarray:
        if self._paced:
            self._pace()
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if self.kind is SourceKind.FILE:
            if self._settings.loop and not self._closed.is_set():
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self._cap.read()
                if ok and frame is not None:
                    return frame
            raise EndOfStream("end of video file")
        if self.kind is SourceKind.URL:
            raise EndOfStream(f"stream ended or timed out after {self._settings.stall_timeout_s:g} s")
        raise SourceError(f"{self.description} stopped delivering frames (unplugged or read timeout)")

    def _pace(self) -> None:
        """Deliver file frames at the file's own rate, like a camera, without drifting."""
        now = time.monotonic()
        if self._next_due == 0.0 or now - self._next_due > 1.0:
            self._next_due = now  # first frame, or we fell far behind: restart the schedule
        elif self._next_due > now:
            self._closed.wait(self._next_due - now)
        self._next_due += self._interval

    def close(self) -> None:
        self._closed.set()
        self._cap.release()


def open_source(settings: CaptureSettings) -> FrameSource:
    """Open CAPTURE_SOURCE; raises SourceError with a reason a person can act on."""
    if settings.source is None:
        raise SourceError("no capture source configured", permanent=True)
    return OpenCvSource(settings, settings.source)
