"""A single-producer, single-consumer ring buffer between the audio callback and the processing thread.

The producer is PortAudio's callback thread (or the WAV replay thread); it must never wait, so `write` takes no
lock: each side only ever advances its own counter (`_written` or `_read`, plain ints whose assignment is atomic
under the GIL) and reads the other's. When the consumer falls behind and the buffer is full, `write` keeps what
fits, drops the rest and counts it: `overflows` (blocks that did not fit) and `dropped_samples`.
The consumer polls (`read` with a timeout), so the producer never has to signal anything.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from korall_workloads.audio.features import FloatArray


class RingBuffer:
    """Fixed-capacity float32 buffer of (frames, channels) samples."""

    def __init__(self, capacity_frames: int, channels: int = 1) -> None:
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError("capacity_frames and channels must be positive")
        self.capacity = capacity_frames
        self.channels = channels
        self._data = np.zeros((capacity_frames, channels), dtype=np.float32)
        self._written = 0  # advanced only by the producer
        self._read = 0  # advanced only by the consumer
        self.overflows = 0
        self.dropped_samples = 0
        self.closed = False

    @property
    def available(self) -> int:
        return self._written - self._read

    @property
    def free(self) -> int:
        return self.capacity - self.available

    def write(self, block: npt.NDArray[np.float32]) -> int:
        """Copy (frames, channels) samples in without ever blocking; returns how many frames fit."""
        frames = block.shape[0]
        room = self.free
        if frames > room:
            self.overflows += 1
            self.dropped_samples += frames - room
            frames = room
        if frames <= 0:
            return 0
        start = self._written % self.capacity
        first = min(frames, self.capacity - start)
        self._data[start : start + first] = block[:first].reshape(first, self.channels)
        if first < frames:
            self._data[: frames - first] = block[first:frames].reshape(frames - first, self.channels)
        self._written += frames
        return frames

    def close(self) -> None:
        """The producer has finished (end of a WAV file); the consumer drains what is left, then stops."""
        self.closed = True

    def read(self, frames: int, timeout: float, poll_s: float = 0.005) -> FloatArray | None:
        """Take exactly `frames` frames, waiting up to `timeout` s; None if they did not arrive in time.

        Once the buffer is closed, the last partial block is returned (possibly empty) instead of waiting.
        """
        deadline = time.monotonic() + timeout
        while self.available < frames:
            if self.closed:
                frames = self.available
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll_s)
        start = self._read % self.capacity
        first = min(frames, self.capacity - start)
        out = np.empty((frames, self.channels), dtype=np.float32)
        out[:first] = self._data[start : start + first]
        if first < frames:
            out[first:] = self._data[: frames - first]
        self._read += frames
        return out
