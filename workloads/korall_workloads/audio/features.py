"""Energy features of audio, vectorised with numpy and free of state, so that they are trivially testable.

Levels are dBFS relative to a full-scale square wave (RMS 1.0): a full-scale sine reads -3.0 dBFS. Digital silence
is clamped to `FLOOR_DBFS` instead of minus infinity so that every figure stays a finite float in JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FLOOR_DBFS = -120.0

FloatArray = npt.NDArray[np.float32]


def to_dbfs(rms: npt.ArrayLike) -> Any:
    """RMS (linear, re full scale) to dBFS, clamped at `FLOOR_DBFS`; works on scalars and arrays."""
    return np.maximum(20.0 * np.log10(np.maximum(np.asarray(rms, dtype=np.float64), 1e-12)), FLOOR_DBFS)


@dataclass(frozen=True)
class ChunkFeatures:
    """Features of one analysis chunk; `start_s`/`end_s` are audio time from stream start."""

    start_s: float
    end_s: float
    rms: float
    dbfs: float
    peak: float
    zcr: float  # zero crossings per sample, 0..1

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 6) for key, value in asdict(self).items()}


def chunk_features(samples: FloatArray, start_s: float, sample_rate: int) -> ChunkFeatures:
    """RMS, dBFS, peak and zero-crossing rate of one mono chunk."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return ChunkFeatures(start_s, start_s, 0.0, FLOOR_DBFS, 0.0, 0.0)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    peak = float(np.max(np.abs(x)))
    signs = np.signbit(x)
    zcr = float(np.count_nonzero(signs[1:] != signs[:-1]) / max(1, x.size - 1))
    return ChunkFeatures(start_s, start_s + x.size / sample_rate, rms, float(to_dbfs(rms)), peak, zcr)


def frame_dbfs(frames: FloatArray) -> npt.NDArray[np.float64]:
    """dBFS of each row of a (n_frames, frame_len) array."""
    return np.asarray(to_dbfs(np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))), dtype=np.float64)


def to_mono(block: npt.NDArray[Any]) -> FloatArray:
    """(frames, channels) or (frames,) samples to mono float32 by averaging the channels."""
    data = np.asarray(block, dtype=np.float32)
    return data if data.ndim == 1 else data.mean(axis=1, dtype=np.float32)
