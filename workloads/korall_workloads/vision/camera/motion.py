"""Motion gating: skip inference on frames where nothing moved since the last inferred one (cheap differencing).

A fixed camera watches an unchanging scene most of the time; running the detector on it again gives the same
answer. The gate compares a tiny grayscale copy of each sampled frame (80x60, ~0.4 ms at 640x480) with the one
of the last frame that was inferred, and lets a frame through when more than `min_change` of its pixels changed
by more than PIXEL_DELTA grey levels, or when `max_skip_s` passed without an inference (so the latest result
never gets too old, and objects that stopped moving stay reported). Off when `min_change` is 0.

Measured by bench/bench_capture.py (a scene that is still half of the time): see docs/capture.md.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB_SIZE = (80, 60)
PIXEL_DELTA = 15  # grey levels; above sensor noise and MJPG ringing, below any real edge moving


def thumbnail(bgr: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA)


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """The share of thumbnail pixels that differ by more than PIXEL_DELTA."""
    return float(np.count_nonzero(cv2.absdiff(a, b) > PIXEL_DELTA)) / a.size


class MotionGate:
    """Decides, per sampled frame, whether it is worth an inference (used by the inference worker only)."""

    def __init__(self, min_change: float, max_skip_s: float) -> None:
        self.min_change = min_change
        self.max_skip_s = max_skip_s
        self._reference: np.ndarray | None = None
        self._reference_at = 0.0
        self.last_change = 1.0

    def admit(self, bgr: np.ndarray, now: float) -> bool:
        """True if the frame should be inferred; the admitted frame becomes the new reference."""
        thumb = thumbnail(bgr)
        if self._reference is None or now - self._reference_at >= self.max_skip_s:
            self.last_change = 1.0
        else:
            self.last_change = changed_fraction(thumb, self._reference)
            if self.last_change < self.min_change:
                return False
        self._reference, self._reference_at = thumb, now
        return True
