"""Prometheus metrics of the camera pipeline, registered on the registry the app passes in.

Counters are the source of truth (rate() them in Prometheus); the fps gauges are a sliding-window rate
for people reading /metrics or /health by eye.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from .state import CameraState

# Frame-to-result latency: from the moment a frame left the source to the moment its detections are published.
LATENCY_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class RateMeter:
    """Events per second over the last `window_s` seconds (thread-safe)."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def mark(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = now - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.capture_rate = RateMeter()
        self.infer_rate = RateMeter()
        self.frames_captured = Counter(
            "korall_capture_frames", "Frames read from the capture source.", registry=registry
        )
        self.frames_sampled = Counter(
            "korall_capture_frames_sampled", "Frames handed to inference (every Nth).", registry=registry
        )
        self.frames_inferred = Counter(
            "korall_capture_frames_inferred", "Frames that went through the detector.", registry=registry
        )
        self.frames_dropped = Counter(
            "korall_capture_frames_dropped",
            "Sampled frames never inferred: ring_full = evicted as the oldest, superseded = skipped for a newer one, "
            "detector_not_ready = the model was not loaded yet.",
            ["reason"],
            registry=registry,
        )
        self.frames_still = Counter(
            "korall_capture_frames_still",
            "Sampled frames not inferred because nothing moved since the last inferred one (motion gating).",
            registry=registry,
        )
        self.detect_errors = Counter(
            "korall_capture_detect_errors", "Detector failures on camera frames.", registry=registry
        )
        self.reconnects = Counter("korall_capture_reconnects", "Attempts to reopen the source.", registry=registry)
        self.queue_depth = Gauge("korall_capture_queue_depth", "Frames waiting in the ring buffer.", registry=registry)
        self.latency = Histogram(
            "korall_capture_frame_to_result_seconds",
            "From frame capture to its published detections.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.state = Enum(
            "korall_capture_state",
            "Camera state.",
            states=[str(s) for s in CameraState],
            registry=registry,
        )
        capture_fps = Gauge("korall_capture_fps", "Frames captured per second (3 s window).", registry=registry)
        capture_fps.set_function(self.capture_rate.rate)
        inferred_fps = Gauge(
            "korall_capture_inferred_fps", "Frames inferred per second (3 s window).", registry=registry
        )
        inferred_fps.set_function(self.infer_rate.rate)
        for reason in ("ring_full", "superseded", "detector_not_ready"):
            self.frames_dropped.labels(reason)
