"""Streaming conversion of any capture rate to the VAD's 16 kHz, block by block, without seams.

Microphones and the CaptureProfile CRD offer 8, 16, 22.05, 32, 44.1 and 48 kHz; silero wants 16 kHz. Whole
multiples are decimated by averaging each group (exact and cheapest); other rates go through a short moving-average
low-pass (when lowering the rate) and linear interpolation. That is crude as audio resampling goes, but the VAD
only needs the speech band below 4 kHz, and the bench and tests measure the result (44.1 kHz and 8 kHz scenes give
the same events as 16 kHz ones). The carried state makes N blocks give the same samples as one long block.
"""

from __future__ import annotations

import numpy as np

from korall_workloads.audio.features import FloatArray


class StreamResampler:
    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError("rates must be positive")
        self.source_rate = source_rate
        self.target_rate = target_rate
        self._factor = source_rate // target_rate if source_rate % target_rate == 0 else 0
        self._step = source_rate / target_rate  # input samples per output sample
        width = max(1, round(self._step)) if self._step > 1 and not self._factor else 1
        self._kernel = np.full(width, 1.0 / width, dtype=np.float32)
        self._history = np.zeros(width - 1, dtype=np.float32)  # low-pass state
        self._carry = np.zeros(0, dtype=np.float32)  # input not yet consumed
        self._position = 0.0  # where the next output sample falls, in input samples from the start of _carry

    def process(self, samples: FloatArray) -> FloatArray:
        """Resample the next block of mono samples; returns what is complete so far."""
        x = np.asarray(samples, dtype=np.float32)
        if self.source_rate == self.target_rate or x.size == 0:
            return x
        if self._factor:
            buf = np.concatenate([self._carry, x])
            usable = buf.size - buf.size % self._factor
            self._carry = buf[usable:]
            return buf[:usable].reshape(-1, self._factor).mean(axis=1, dtype=np.float32)
        if self._kernel.size > 1:
            padded = np.concatenate([self._history, x])
            self._history = padded[padded.size - (self._kernel.size - 1) :]
            x = np.convolve(padded, self._kernel, mode="valid").astype(np.float32)
        buf = np.concatenate([self._carry, x])
        if buf.size < 2:
            self._carry = buf
            return np.zeros(0, dtype=np.float32)
        count = int(np.floor((buf.size - 1 - self._position) / self._step)) + 1
        if count <= 0:
            self._carry = buf
            return np.zeros(0, dtype=np.float32)
        positions = self._position + self._step * np.arange(count)
        out = np.interp(positions, np.arange(buf.size), buf).astype(np.float32)
        next_position = self._position + self._step * count
        keep_from = min(int(np.floor(next_position)), buf.size - 1)
        self._carry = buf[keep_from:]
        self._position = next_position - keep_from
        return out
