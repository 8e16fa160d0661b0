"""Video files that stand in for a camera in the camera tests (written with OpenCV's VideoWriter).

- `write_photo_video`: real photos from skimage/data (the cat, the motorcycle) sliding across a brick wall,
  through the same generator as `python -m korall_tools.demo_video`;
- `write_stamped_video`: frames that carry their own index as a row of black/white squares, so a test can
  read back from the pixels which frame reached the detector.
MJPG in .avi: every OpenCV build writes and reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from korall_tools.demo_video import moving_photo_frames, write_video

STAMP_BITS = 12
STAMP_CELL = 24


def write_photo_video(path: Path, frames: int, fps: float, *, width: int = 640, height: int = 480) -> Path:
    n = write_video(path, moving_photo_frames(frames, width=width, height=height), fps)
    assert n == frames
    return path


def stamp(frame: np.ndarray, index: int) -> np.ndarray:
    for bit in range(STAMP_BITS):
        value = 255 if (index >> bit) & 1 else 0
        x = bit * STAMP_CELL
        frame[0:STAMP_CELL, x : x + STAMP_CELL] = value
    return frame


def read_stamp(frame: np.ndarray) -> int:
    """The index written by `stamp`, read from the centre of each cell (robust to JPEG ringing)."""
    index = 0
    c = STAMP_CELL // 2
    for bit in range(STAMP_BITS):
        if frame[c, bit * STAMP_CELL + c].mean() > 127:
            index |= 1 << bit
    return index


def stamped_frames(count: int, width: int = 320, height: int = 240) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.integers(60, 190, size=(height, width, 3), dtype=np.uint8)
    for i in range(count):
        yield stamp(base.copy(), i)


def write_stamped_video(path: Path, frames: int, fps: float, *, width: int = 320, height: int = 240) -> Path:
    n = write_video(path, stamped_frames(frames, width, height), fps)
    assert n == frames
    return path
