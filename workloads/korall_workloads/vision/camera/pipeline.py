"""The camera pipeline: capture thread -> every-Nth sampler -> drop-oldest ring -> inference worker.

Two threads, one ring between them:
- the capture thread owns the source: it reads frames as fast as the source delivers them, samples every
  Nth one into the ring (never blocking), and on any loss (device gone, read timeout, end of stream)
  closes the source and reopens it with exponential backoff;
- the inference worker takes the newest frame from the ring, runs the shared detector on it (the detector
  serializes its interpreter, so `/infer` requests and the camera interleave safely), keeps the latest
  result for /detections and /snapshot.jpg, and publishes it to live-stream subscribers.

Inference therefore never backs up capture: a slow detector only means more frames dropped (counted), and
the result it produces is always for a recent frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from korall_workloads.common.broadcast import Broadcaster

from .metrics import CaptureMetrics
from .motion import MotionGate
from .ring import FrameRing
from .settings import CaptureSettings
from .source import FrameSource, Negotiated, SourceError, open_source, redact
from .state import CameraState, StateTracker

log = logging.getLogger(__name__)


class Detector(Protocol):
    """What the pipeline needs from the vision service's detector: thread-safe detection on an RGB frame."""

    def detect(self, rgb: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class CapturedFrame:
    index: int
    image: np.ndarray  # BGR, as OpenCV delivers it
    captured_monotonic: float
    captured_unix: float


@dataclass(frozen=True)
class FrameResult:
    """The detections for one camera frame, with the frame itself (for /snapshot.jpg)."""

    frame_index: int
    frame_ts: float
    width: int
    height: int
    detections: list[dict[str, Any]]
    timings_ms: dict[str, float]
    image: np.ndarray = dataclasses.field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "frame_index": self.frame_index,
            "frame_ts": self.frame_ts,
            "image": {"width": self.width, "height": self.height},
            "detections": self.detections,
            "timings_ms": self.timings_ms,
        }

    def stream_event(self) -> StreamEvent:
        return StreamEvent(self.frame_index, json.dumps(self.as_json()))


@dataclass(frozen=True)
class StreamEvent:
    """A result as live-stream clients get it: serialized once, without the frame (slow clients hold these)."""

    frame_index: int
    data: str


def result_payload(result: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The detections and timings of a detector result as JSON-ready data: the service's `DetectionResult` (a
    dataclass), or the plain dict the tests' stand-in detectors return."""
    data = result if isinstance(result, dict) else dataclasses.asdict(result)
    detections = [dict(d) for d in data.get("detections", [])]
    raw_timings = data.get("timings_ms") or data.get("timings") or {}
    timings = {str(k).removesuffix("_ms"): float(v) for k, v in raw_timings.items() if isinstance(v, int | float)}
    return detections, timings


@dataclass(frozen=True)
class _ReadOutcome:
    """How a stretch of reading ended: whether any frame came, and the error (None when stopped)."""

    got_frames: bool
    error: SourceError | None


class CameraPipeline:
    """Runs one camera source against one shared detector until `stop()`."""

    def __init__(
        self,
        settings: CaptureSettings,
        detector: Detector,
        registry: CollectorRegistry | None = None,
        *,
        source_opener: Callable[[CaptureSettings], FrameSource] = open_source,
        on_result: Callable[[FrameResult], None] | None = None,
        stream_queue_size: int = 8,
    ) -> None:
        self.settings = settings
        self._detector = detector
        self._open = source_opener
        self._on_result = on_result
        self.metrics = CaptureMetrics(registry if registry is not None else CollectorRegistry())
        self.tracker = StateTracker(on_change=lambda s: self.metrics.state.state(str(s)))
        self.ring: FrameRing[CapturedFrame] = FrameRing(settings.buffer_frames)
        self.broadcaster = Broadcaster(stream_queue_size)
        self._gate = (
            MotionGate(settings.motion_min_change, settings.motion_max_skip_s) if settings.motion_min_change else None
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._latest: FrameResult | None = None
        self._negotiated: Negotiated | None = None
        self._frames = 0
        self._sampled = 0
        self._inferred = 0
        self._detect_errors = 0
        self._not_ready = 0
        self._still = 0
        self._reconnects = 0
        self._last_frame_monotonic: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("pipeline already started")
        self.metrics.state.state(str(self.tracker.current.state))
        self._threads = [
            threading.Thread(target=self._capture_loop, name="camera-capture", daemon=True),
            threading.Thread(target=self._inference_loop, name="camera-inference", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "camera pipeline started: %s, requested %dx%d @ %g fps %s, every %d frame(s), ring of %d",
            redact(self.settings.source or ""),
            self.settings.width,
            self.settings.height,
            self.settings.fps,
            self.settings.pixel_format,
            self.settings.sample_every,
            self.settings.buffer_frames,
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.ring.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.1f s (blocked in the source?)", thread.name, timeout)
        self.tracker.set(CameraState.STOPPED, "service shutting down")
        self.broadcaster.close()

    # -- what the HTTP layer reads ---------------------------------------------------------------------------

    def latest(self) -> FrameResult | None:
        with self._lock:
            return self._latest

    @property
    def streaming(self) -> bool:
        self._check_stall()
        return self.tracker.current.state is CameraState.STREAMING

    def status(self) -> dict[str, Any]:
        """The camera's state and counters, for /health, /ready and /camera."""
        self._check_stall()
        counters = self.ring.counters
        now = time.monotonic()
        with self._lock:
            last = self._last_frame_monotonic
            body: dict[str, Any] = {
                **self.tracker.current.as_dict(),
                "source": redact(self.settings.source or ""),
                "requested": {
                    "width": self.settings.width,
                    "height": self.settings.height,
                    "fps": self.settings.fps,
                    "pixel_format": self.settings.pixel_format,
                },
                "negotiated": self._negotiated.as_dict() if self._negotiated else None,
                "sample_every": self.settings.sample_every,
                "frames_captured": self._frames,
                "frames_sampled": self._sampled,
                "frames_inferred": self._inferred,
                "frames_dropped": {
                    "ring_full": counters.dropped_full,
                    "superseded": counters.superseded,
                    "detector_not_ready": self._not_ready,
                },
                "frames_still": self._still,
                "motion_gating": self._gate is not None,
                "detect_errors": self._detect_errors,
                "reconnects": self._reconnects,
                "queue_depth": len(self.ring),
                "queue_max_depth": counters.max_depth,
                "buffer_frames": self.ring.capacity,
                "capture_fps": round(self.metrics.capture_rate.rate(), 2),
                "inferred_fps": round(self.metrics.infer_rate.rate(), 2),
                "last_frame_age_s": None if last is None else round(now - last, 3),
                "stream_clients": self.broadcaster.subscribers,
            }
        return body

    # -- capture thread --------------------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        failures = 0
        first = True
        while not self._stop.is_set():
            if not first:
                with self._lock:
                    self._reconnects += 1
                self.metrics.reconnects.inc()
            first = False
            try:
                source = self._open(self.settings)
            except Exception as exc:
                failures += 1
                if not isinstance(exc, SourceError):
                    log.exception("unexpected error opening the camera source")
                    exc = SourceError(f"unexpected {type(exc).__name__} opening the source: {exc}")
                if not self._after_failure(exc, failures):
                    return
                continue
            with self._lock:
                self._negotiated = source.negotiated
            log.info("camera opened: %s, delivering %s", source.description, source.negotiated.as_dict())
            try:
                outcome = self._read_frames(source)
            finally:
                self._close(source)  # before any backoff: a lost device must not stay held while we wait
            if outcome.error is None:
                return  # stopped
            failures = 0 if outcome.got_frames else failures + 1
            if not self._after_failure(outcome.error, max(failures, 1)):
                return

    @staticmethod
    def _close(source: FrameSource) -> None:
        try:
            source.close()
        except Exception:
            log.exception("closing %s failed", source.description)

    def _read_frames(self, source: FrameSource) -> _ReadOutcome:
        got_frames = False
        every = self.settings.sample_every
        while not self._stop.is_set():
            try:
                image = source.read()
            except SourceError as exc:
                return _ReadOutcome(got_frames, exc)
            except Exception as exc:  # an OpenCV or driver error: treat it as a lost source, never die of it
                log.exception("unexpected error reading the camera source")
                return _ReadOutcome(got_frames, SourceError(f"unexpected {type(exc).__name__} reading: {exc}"))
            now = time.monotonic()
            got_frames = True
            with self._lock:
                index = self._frames
                self._frames += 1
                self._last_frame_monotonic = now
            self.metrics.frames_captured.inc()
            self.metrics.capture_rate.mark(now)
            if self.tracker.current.state is not CameraState.STREAMING:
                h, w = image.shape[:2]
                self.tracker.set(CameraState.STREAMING, f"frames arriving ({w}x{h})")
            if index % every == 0:
                with self._lock:
                    self._sampled += 1
                self.metrics.frames_sampled.inc()
                if self.ring.put(CapturedFrame(index, image, now, time.time())):
                    self.metrics.frames_dropped.labels("ring_full").inc()
                self.metrics.queue_depth.set(len(self.ring))
        return _ReadOutcome(got_frames, None)

    def _after_failure(self, exc: SourceError, failures: int) -> bool:
        """Decide between retrying (after a backoff) and giving up; returns False to end the capture thread."""
        limit = self.settings.max_reconnects
        if exc.permanent:
            self.tracker.set(CameraState.FAILED, exc.reason)
            return False
        if limit and failures > limit:
            self.tracker.set(CameraState.FAILED, f"{exc.reason} (gave up after {limit} reconnects)")
            return False
        delay = self.settings.reconnect_delay(failures)
        self.tracker.set(CameraState.RECONNECTING, f"{exc.reason}; retrying in {delay:g} s")
        return not self._stop.wait(delay)

    def _check_stall(self) -> None:
        with self._lock:
            last = self._last_frame_monotonic
        if last is None:
            return
        age = time.monotonic() - last
        if age > self.settings.stall_timeout_s:
            self.tracker.set(
                CameraState.STALLED,
                f"no frame for more than {self.settings.stall_timeout_s:g} s",
                only_from={CameraState.STREAMING},
            )

    # -- inference worker ------------------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            taken = self.ring.take_newest(timeout=0.25)
            self.metrics.queue_depth.set(len(self.ring))
            if taken is None:
                self._check_stall()
                continue
            if taken.superseded:
                self.metrics.frames_dropped.labels("superseded").inc(taken.superseded)
            try:
                self._infer(taken.item)
            except Exception:  # a bug in publishing must not end the worker; the log shows it
                log.exception("camera inference worker: unexpected error on frame %d", taken.item.index)

    def _infer(self, frame: CapturedFrame) -> None:
        if not getattr(self._detector, "ready", True):  # the model is still loading (or failed): nothing to run
            with self._lock:
                self._not_ready += 1
            self.metrics.frames_dropped.labels("detector_not_ready").inc()
            return
        if self._gate is not None and not self._gate.admit(frame.image, frame.captured_monotonic):
            with self._lock:
                self._still += 1
            self.metrics.frames_still.inc()
            return
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        started = time.perf_counter()
        try:
            detections, timings = result_payload(self._detector.detect(rgb))
        except Exception as exc:
            with self._lock:
                self._detect_errors += 1
                count = self._detect_errors
            self.metrics.detect_errors.inc()
            if count == 1 or count % 100 == 0:
                log.exception("detection on camera frame %d failed (%d so far): %s", frame.index, count, exc)
            return
        done = time.monotonic()
        latency = done - frame.captured_monotonic
        timings = {**timings, "detect": round((time.perf_counter() - started) * 1000, 3)}
        timings["frame_to_result"] = round(latency * 1000, 3)
        h, w = frame.image.shape[:2]
        result = FrameResult(frame.index, frame.captured_unix, w, h, detections, timings, frame.image)
        with self._lock:
            self._latest = result
            self._inferred += 1
        self.metrics.latency.observe(latency)
        self.metrics.frames_inferred.inc()
        self.metrics.infer_rate.mark(done)
        if self.broadcaster.subscribers:
            self.broadcaster.publish(result.stream_event())
        if self._on_result is not None:
            self._on_result(result)
