"""Silence, speech and loud-noise events from per-frame levels and speech probabilities: a pure state machine.

Nothing here knows about devices, threads or HTTP: `EventDetector.push` takes the dBFS and the VAD probability of
consecutive 32 ms frames and returns the events that closed, so every rule below is tested on plain arrays.

Each event has a start and an end in audio time (seconds from stream start, at frame precision) and is reported
once, when it ends. Hysteresis makes one utterance or one bang one event:
- speech starts on the first frame whose probability reaches the threshold and ends with the last such frame,
  once the probability has stayed below threshold-0.15 for `speech_hangover_s` (so the pauses between words stay
  inside, and the VAD's slow release in noise does not stretch the end); shorter than `min_speech_s` is dropped.
- loud_noise: frames at or above `loud_dbfs`, or non-speech frames `loud_jump_db` over the running background
  (a slow average of non-speech frame levels, never below the silence floor). Once loud, a frame stays loud down to
  `loud_release_db` below the trigger level; the event ends after `loud_hangover_s` of quiet. A loud stretch that
  turns into speech within `loud_speech_guard_s` is a voice onset the VAD had not confirmed yet, not a noise
  (unless it reached `loud_dbfs`: a shout is reported as both speech and loud_noise).
- silence: at least `min_silence_s` of frames under `silence_dbfs` while no speech or loud noise is open. Silence
  is an event too (with start and end), so a stream is a sequence of events with gaps only where the level sat
  between the silence floor and anything recognised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

EventType = Literal["silence", "speech", "loud_noise"]
EVENT_TYPES: tuple[EventType, ...] = ("silence", "speech", "loud_noise")


@dataclass(frozen=True)
class AudioEvent:
    """One closed event; times are seconds of audio from stream start."""

    type: EventType
    start_s: float
    end_s: float
    peak_dbfs: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "duration_s": round(self.end_s - self.start_s, 3),
            "peak_dbfs": round(self.peak_dbfs, 2),
        }


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds from the settings plus the timing constants of the hysteresis (seconds)."""

    frame_s: float = 0.032
    silence_dbfs: float = -50.0
    loud_dbfs: float = -6.0
    loud_jump_db: float = 25.0
    vad_threshold: float = 0.5
    vad_release: float = 0.15
    min_speech_s: float = 0.25
    speech_hangover_s: float = 0.3
    min_silence_s: float = 0.5
    loud_hangover_s: float = 0.15
    loud_release_db: float = 6.0
    loud_speech_guard_s: float = 0.2
    background_tau_s: float = 5.0


class EventDetector:
    """Feeds on consecutive frames, returns closed events; `flush` closes what is open at the end of a stream."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.frames_seen = 0
        self.background_dbfs: float | None = None
        self._last_activity_end = 0.0
        # speech
        self._speech_start: float | None = None
        self._speech_below_since: float | None = None
        self._speech_last_end = 0.0  # end of the last frame at or above the threshold
        self._speech_peak = -np.inf
        # loud noise
        self._loud_start: float | None = None
        self._loud_last_end = 0.0
        self._loud_trigger_jump: float = 0.0
        self._loud_peak = -np.inf
        self._loud_absolute = False
        # silence
        self._silent_run_start: float | None = None
        self._silence_start: float | None = None
        self._silence_peak = -np.inf

    @property
    def now_s(self) -> float:
        """Audio time at the end of the last frame pushed."""
        return self.frames_seen * self.config.frame_s

    def open_events(self) -> dict[EventType, float]:
        """The events under way, each with its start (audio s): what the stream is doing now, before they close."""
        starts: dict[EventType, float | None] = {
            "speech": self._speech_start,
            "loud_noise": self._loud_start,
            "silence": self._silence_start,
        }
        return {kind: round(start, 3) for kind, start in starts.items() if start is not None}

    def push(self, dbfs: npt.ArrayLike, speech_prob: npt.ArrayLike) -> list[AudioEvent]:
        """Advance by one frame per element of the two equally long arrays; return the events that closed."""
        levels = np.asarray(dbfs, dtype=np.float64)
        probs = np.asarray(speech_prob, dtype=np.float64)
        if levels.shape != probs.shape:
            raise ValueError(f"{levels.shape[0]} levels but {probs.shape[0]} probabilities")
        out: list[AudioEvent] = []
        for level, prob in zip(levels.tolist(), probs.tolist(), strict=True):
            self._step(level, prob, out)
        return out

    def flush(self) -> list[AudioEvent]:
        """Close every open event at the current audio time (end of stream)."""
        out: list[AudioEvent] = []
        end = self.now_s
        if self._speech_start is not None:
            self._close_speech(self._speech_last_end if self._speech_below_since is not None else end, out)
        if self._loud_start is not None:
            self._close_loud(out)
        if self._silence_start is None and self._silent_run_start is not None:
            start = max(self._silent_run_start, self._last_activity_end)
            if end - start >= self.config.min_silence_s - 1e-9:
                self._silence_start = start
        if self._silence_start is not None:
            out.append(AudioEvent("silence", self._silence_start, end, float(self._silence_peak)))
            self._silence_start = None
        return out

    # -- one frame -------------------------------------------------------------------------------------------

    def _step(self, level: float, prob: float, out: list[AudioEvent]) -> None:
        cfg = self.config
        t0 = self.frames_seen * cfg.frame_s
        t1 = t0 + cfg.frame_s
        self.frames_seen += 1

        self._step_speech(level, prob, t0, t1, out)
        speechy = self._speech_start is not None or prob >= cfg.vad_threshold
        self._step_loud(level, speechy, t0, t1, out)
        if not speechy:
            if self.background_dbfs is None:
                self.background_dbfs = level
            else:
                self.background_dbfs += (cfg.frame_s / cfg.background_tau_s) * (level - self.background_dbfs)
        self._step_silence(level, t0, t1, out)

    def _step_speech(self, level: float, prob: float, t0: float, t1: float, out: list[AudioEvent]) -> None:
        cfg = self.config
        if prob >= cfg.vad_threshold:
            if self._speech_start is None:
                self._speech_start = t0
                self._speech_peak = -np.inf
            self._speech_below_since = None
            self._speech_last_end = t1
        elif self._speech_start is not None:
            if prob < cfg.vad_threshold - cfg.vad_release:
                if self._speech_below_since is None:
                    self._speech_below_since = t0
                if t1 - self._speech_below_since >= cfg.speech_hangover_s - 1e-9:
                    self._close_speech(self._speech_last_end, out)
                    return
            else:
                self._speech_below_since = None
        if self._speech_start is not None and self._speech_below_since is None:
            self._speech_peak = max(self._speech_peak, level)

    def _close_speech(self, end: float, out: list[AudioEvent]) -> None:
        assert self._speech_start is not None
        if end - self._speech_start >= self.config.min_speech_s - 1e-9:
            out.append(AudioEvent("speech", self._speech_start, end, float(self._speech_peak)))
            self._last_activity_end = max(self._last_activity_end, end)
        self._speech_start = None
        self._speech_below_since = None

    def _step_loud(self, level: float, speechy: bool, t0: float, t1: float, out: list[AudioEvent]) -> None:
        cfg = self.config
        reference = max(self.background_dbfs if self.background_dbfs is not None else level, cfg.silence_dbfs)
        if self._loud_start is None:
            jump_level = reference + cfg.loud_jump_db
            is_loud = level >= cfg.loud_dbfs or (not speechy and level >= jump_level)
            if is_loud:
                self._loud_start = t0
                self._loud_trigger_jump = jump_level
                self._loud_peak = -np.inf
                self._loud_absolute = False
        else:
            is_loud = level >= cfg.loud_dbfs - cfg.loud_release_db or (
                not speechy and level >= self._loud_trigger_jump - cfg.loud_release_db
            )
        if is_loud:
            self._loud_last_end = t1
            self._loud_peak = max(self._loud_peak, level)
            self._loud_absolute = self._loud_absolute or level >= cfg.loud_dbfs
        elif self._loud_start is not None and t1 - self._loud_last_end >= cfg.loud_hangover_s - 1e-9:
            self._close_loud(out)

    def _close_loud(self, out: list[AudioEvent]) -> None:
        assert self._loud_start is not None
        voice_onset = (
            not self._loud_absolute
            and self._speech_start is not None
            and self._speech_start <= self._loud_last_end + self.config.loud_speech_guard_s
            and self._speech_start >= self._loud_start
        )
        if not voice_onset:
            out.append(AudioEvent("loud_noise", self._loud_start, self._loud_last_end, float(self._loud_peak)))
            self._last_activity_end = max(self._last_activity_end, self._loud_last_end)
        self._loud_start = None

    def _step_silence(self, level: float, t0: float, t1: float, out: list[AudioEvent]) -> None:
        cfg = self.config
        silent = level < cfg.silence_dbfs
        if not silent:
            self._silent_run_start = None
        elif self._silent_run_start is None:
            self._silent_run_start = t0
        active = self._speech_start is not None or self._loud_start is not None
        if self._silence_start is not None and (active or not silent):
            out.append(AudioEvent("silence", self._silence_start, t0, float(self._silence_peak)))
            self._silence_start = None
        if silent and not active and self._silence_start is None and self._silent_run_start is not None:
            start = max(self._silent_run_start, self._last_activity_end)
            if t1 - start >= cfg.min_silence_s - 1e-9:
                self._silence_start = start
                self._silence_peak = -np.inf
        if self._silence_start is not None:
            self._silence_peak = max(self._silence_peak, level)
