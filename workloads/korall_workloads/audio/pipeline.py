"""One chunk of new audio in, its features and the events that closed out: features -> VAD -> event detector.

Chunks are `AUDIO_CHUNK_S` long and advance by `hop_s` (the chunk minus `AUDIO_OVERLAP_S`): features are taken over
the whole (overlapping) chunk, while the VAD and the event detector see every sample exactly once, in 32 ms frames
at 16 kHz carried over from chunk to chunk, so overlap never repeats an event and event times keep frame precision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from korall_workloads.audio.events import AudioEvent, DetectorConfig, EventDetector, EventType
from korall_workloads.audio.features import ChunkFeatures, FloatArray, chunk_features, frame_dbfs, to_dbfs, to_mono
from korall_workloads.audio.resample import StreamResampler
from korall_workloads.audio.settings import VAD_SAMPLE_RATE, AudioSettings
from korall_workloads.audio.vad import FRAME_SAMPLES, SpeechDetector


def detector_config(settings: AudioSettings) -> DetectorConfig:
    return DetectorConfig(
        frame_s=FRAME_SAMPLES / VAD_SAMPLE_RATE,
        silence_dbfs=settings.silence_dbfs,
        loud_dbfs=settings.loud_dbfs,
        loud_jump_db=settings.loud_jump_db,
        vad_threshold=settings.vad_threshold,
    )


@dataclass(frozen=True)
class ChunkResult:
    features: ChunkFeatures
    events: list[AudioEvent]
    processing_s: float
    audio_s: float
    open: dict[EventType, float] = field(default_factory=dict)
    """Events under way after this chunk, with their start (audio s)."""
    frames_start_s: float = 0.0
    frame_dbfs: tuple[float, ...] = ()
    """The level of each 32 ms VAD frame this chunk completed, from `frames_start_s` on (the live level meter)."""

    def level(self) -> dict[str, Any]:
        """The live level record: the chunk's level and peak, its frames' levels and the events under way, on the
        events' clock (`now_s`: the end of the last frame, as `start_s`/`end_s` of the events)."""
        peak = float(to_dbfs(self.features.peak))
        step = FRAME_SAMPLES / VAD_SAMPLE_RATE
        return {
            "now_s": round(self.frames_start_s + step * len(self.frame_dbfs), 3),
            "start_s": round(self.features.start_s, 3),
            "end_s": round(self.features.end_s, 3),
            "dbfs": round(self.features.dbfs, 2),
            "peak_dbfs": round(peak, 2),
            "frames": {
                "start_s": round(self.frames_start_s, 3),
                "step_s": step,
                "dbfs": [round(level, 1) for level in self.frame_dbfs],
            },
            "open": self.open,
        }

    @property
    def realtime_factor(self) -> float:
        return self.processing_s / self.audio_s if self.audio_s > 0 else 0.0


class ChunkPipeline:
    """Stateful across chunks of one stream: the overlap tail, the VAD's frame remainder and the detector."""

    def __init__(self, settings: AudioSettings, sample_rate: int, vad: SpeechDetector) -> None:
        self.sample_rate = sample_rate
        self.chunk_frames = round(settings.chunk_s * sample_rate)
        self.hop_frames = max(1, round(settings.hop_s * sample_rate))
        self.overlap_frames = self.chunk_frames - self.hop_frames
        self.resampler = StreamResampler(sample_rate, VAD_SAMPLE_RATE)
        self.vad = vad
        self.detector = EventDetector(detector_config(settings))
        self._tail = np.zeros(0, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples_in = 0

    def process(self, block: FloatArray) -> ChunkResult:
        """Process `hop_frames` new (frames, channels) samples (fewer only at the end of a stream)."""
        began = time.perf_counter()
        mono = to_mono(block)
        window = np.concatenate([self._tail, mono]) if self.overlap_frames else mono
        start_s = (self.samples_in + mono.size - window.size) / self.sample_rate
        features = chunk_features(window, start_s, self.sample_rate)
        if self.overlap_frames:
            self._tail = window[-self.overlap_frames :]
        self.samples_in += mono.size

        pending = np.concatenate([self._pending, self.resampler.process(mono)])
        n_frames = pending.size // FRAME_SAMPLES
        frames = pending[: n_frames * FRAME_SAMPLES].reshape(n_frames, FRAME_SAMPLES)
        self._pending = pending[n_frames * FRAME_SAMPLES :]
        events: list[AudioEvent] = []
        frames_start_s = self.detector.now_s
        levels: tuple[float, ...] = ()
        if n_frames:
            frame_levels = frame_dbfs(frames)
            events = self.detector.push(frame_levels, self.vad.probabilities(frames))
            levels = tuple(frame_levels.tolist())
        return ChunkResult(
            features,
            events,
            time.perf_counter() - began,
            mono.size / self.sample_rate,
            self.detector.open_events(),
            frames_start_s,
            levels,
        )

    def finish(self) -> list[AudioEvent]:
        """End of stream: close whatever is open."""
        return self.detector.flush()

    def interrupt(self) -> list[AudioEvent]:
        """The source failed: close what is open at the last sample heard and start afresh for the next stream.

        Audio time goes on from where it stopped (the outage itself is not audio), so event times stay monotonic.
        """
        events = self.detector.flush()
        frames_seen = self.detector.frames_seen
        self.detector = EventDetector(self.detector.config)
        self.detector.frames_seen = frames_seen
        self._tail = np.zeros(0, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.resampler = StreamResampler(self.sample_rate, VAD_SAMPLE_RATE)
        self.vad.reset()
        return events
