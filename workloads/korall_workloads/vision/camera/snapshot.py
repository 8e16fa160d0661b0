"""Drawing detections onto a frame for /snapshot.jpg (pure functions: frame and detections in, pixels out), and the
one JPEG kept per frame so that every viewer of a frame shares a single encode."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

_COLOURS = [(0, 200, 255), (255, 120, 0), (60, 220, 60), (220, 60, 220), (40, 40, 230), (200, 200, 40)]


def box_pixels(detection: Mapping[str, Any], width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixels from a detection's box, whichever of the usual layouts it uses."""
    for key in ("box_px", "box", "bbox"):
        box = detection.get(key)
        if isinstance(box, Mapping) and {"xmin", "ymin", "xmax", "ymax"} <= box.keys():
            coords = [float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            if max(coords) <= 1.0 and key != "box_px":  # normalized
                coords = [coords[0] * width, coords[1] * height, coords[2] * width, coords[3] * height]
            x0, y0, x1, y1 = (round(c) for c in coords)
            return max(0, x0), max(0, y0), min(width - 1, x1), min(height - 1, y1)
    return None


def draw_detections(image: np.ndarray, detections: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A copy of the BGR `image` with one labelled rectangle per detection."""
    out = image.copy()
    h, w = out.shape[:2]
    thickness = max(1, round(min(w, h) / 240))
    for n, det in enumerate(detections):
        box = box_pixels(det, w, h)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        colour = _COLOURS[int(det.get("class_id", n)) % len(_COLOURS)]
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        text = f"{det.get('label', '?')} {float(det.get('score', 0.0)):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = y0 - 4 if y0 - th - base - 4 > 0 else y0 + th + 4
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 4, ty + base), colour, -1)
        cv2.putText(out, text, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buf)


class EncodedFrames:
    """The JPEG of the latest frame asked for, per (frame index, boxes, quality): the live pages fetch each new
    frame once per viewer, and this makes N viewers cost one encode. Encoding holds the lock, so two requests for
    a new frame that arrive together encode it once; the wait is one encode (a few ms at 640x480)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, bool, int] | None = None
        self._jpeg = b""
        self.encodes = 0

    def jpeg(
        self, frame_index: int, image: np.ndarray, detections: Sequence[Mapping[str, Any]], *, boxes: bool, quality: int
    ) -> bytes:
        key = (frame_index, boxes, quality)
        with self._lock:
            if key != self._key:
                self._jpeg = encode_jpeg(draw_detections(image, detections) if boxes else image, quality)
                self._key = key
                self.encodes += 1
            return self._jpeg
