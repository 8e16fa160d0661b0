"""The camera's state machine, as /health, /ready, /metrics and the logs see it.

    connecting --first frame--> streaming --no frame for stall_timeout--> stalled
        |                          |   ^                                      |
        |                          |   +------------- a frame again ----------+
        v                          v (device lost, read timeout, end of stream)
    reconnecting <-----------------+  (backoff: min, 2*min, ... max)
        |
        +--> failed (a permanent error, or CAPTURE_MAX_RECONNECTS consecutive failures)
    stopped: the service is shutting down.

Every transition is logged once with its reason, so the log tells what happened to the camera. A reason is kept
with credentials redacted (`common.redact`): it may quote an error that quotes the source.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from korall_workloads.common.redact import redact_text

log = logging.getLogger(__name__)


class CameraState(enum.StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


_LEVELS = {
    CameraState.STREAMING: logging.INFO,
    CameraState.CONNECTING: logging.INFO,
    CameraState.STOPPED: logging.INFO,
    CameraState.STALLED: logging.WARNING,
    CameraState.RECONNECTING: logging.WARNING,
    CameraState.FAILED: logging.ERROR,
}


@dataclass(frozen=True)
class StateSnapshot:
    state: CameraState
    reason: str
    since_monotonic: float
    since_unix: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "reason": self.reason,
            "since": self.since_unix,
            "for_s": round(time.monotonic() - self.since_monotonic, 3),
        }


class StateTracker:
    """Holds the current state; transitions are thread-safe, logged, and reported in order to a quick listener."""

    def __init__(self, on_change: Any = None) -> None:
        self._lock = threading.Lock()
        self._on_change = on_change
        self._snapshot = StateSnapshot(CameraState.CONNECTING, "starting", time.monotonic(), time.time())

    @property
    def current(self) -> StateSnapshot:
        with self._lock:
            return self._snapshot

    def set(self, state: CameraState, reason: str, *, only_from: set[CameraState] | None = None) -> bool:
        """Move to `state`; with `only_from`, only if the current state is one of those (returns whether moved)."""
        reason = redact_text(reason)
        with self._lock:
            old = self._snapshot
            if only_from is not None and old.state not in only_from:
                return False
            if old.state == state and old.reason == reason:
                return False
            self._snapshot = StateSnapshot(state, reason, time.monotonic(), time.time())
            # Still under the lock: two threads move the state (capture, and the stall check of HTTP and
            # inference), and the log and the listener (the state metric) must see the moves in their order.
            log.log(_LEVELS[state], "camera %s -> %s: %s", old.state, state, reason)
            if self._on_change is not None:
                self._on_change(state)
        return True
