"""The audio service's configuration: the one place that reads the environment.

Every field is read from the variable named in `korall_contract.AudioEnv` (the operator sets the same names from an
audio CaptureProfile) and validated at start, so a typo stops the service with one clear line instead of failing
later. Fields can also be passed by name (`AudioSettings(chunk_s=2.0)`), which the tests and the bench use.
"""

from __future__ import annotations

from pathlib import Path

from korall_contract import AUDIO_PORT, AudioEnv, SampleRate
from pydantic import Field, field_validator, model_validator

from korall_workloads.common.settings import ServiceSettings, from_contract

VAD_SAMPLE_RATE = 16_000
"""The VAD (silero) runs at 16 kHz; other capture rates are converted for it (`resample.py`)."""

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
"""The rates a WAV file may bring (a device is asked for one of the contract's `SampleRate`s)."""


class AudioSettings(ServiceSettings):
    """Configuration of the audio service (environment names from `korall_contract.AudioEnv`)."""

    source: str = Field(
        default="default",
        min_length=1,
        validation_alias=AudioEnv.AUDIO_SOURCE,
        description="A sounddevice input device name or index (`python -m sounddevice` lists them; `default` is "
        "PortAudio's default input), or a path to a WAV file (anything ending in .wav) to replay.",
    )
    sample_rate: SampleRate = from_contract(
        AudioEnv.AUDIO_SAMPLE_RATE, description="Capture rate in Hz for a device (a WAV file brings its own rate)."
    )
    channels: int = from_contract(AudioEnv.AUDIO_CHANNELS)
    chunk_s: float = from_contract(AudioEnv.AUDIO_CHUNK_S)
    overlap_s: float = from_contract(
        AudioEnv.AUDIO_OVERLAP_S,
        description="Overlap of consecutive chunks (s), less than AUDIO_CHUNK_S; features only, events never repeat.",
    )
    silence_dbfs: float = from_contract(
        AudioEnv.AUDIO_SILENCE_DBFS, description="Frames quieter than this (dBFS, RMS re full scale) are silent."
    )
    loud_dbfs: float = from_contract(AudioEnv.AUDIO_LOUD_DBFS)
    loud_jump_db: float = Field(
        default=25.0,
        ge=3.0,
        le=100.0,
        validation_alias=AudioEnv.AUDIO_LOUD_JUMP_DB,
        description="A non-speech frame this many dB over the running background (at least the silence floor) is "
        "loud too.",
    )
    vad_threshold: float = Field(
        default=0.5,
        gt=0.15,
        lt=1.0,
        validation_alias=AudioEnv.AUDIO_VAD_THRESHOLD,
        description="Speech probability that starts speech; it ends below this minus 0.15.",
    )
    realtime: bool = Field(
        default=True,
        validation_alias=AudioEnv.AUDIO_REALTIME,
        description="Pace a WAV source in real time like a microphone; false reads it as fast as possible.",
    )
    retry_max_s: float = Field(
        default=30.0,
        ge=0.1,
        le=3600.0,
        validation_alias=AudioEnv.AUDIO_RETRY_MAX_S,
        description="Longest wait between attempts to open the source (backoff doubles from 0.5 s up to this).",
    )
    port: int = Field(default=AUDIO_PORT, ge=1, le=65535, validation_alias=AudioEnv.PORT, description="Listen port.")

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _rate_from_text(cls, value: object) -> object:
        """The environment gives text; a Literal of ints does not convert it by itself."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> AudioSettings:
        if self.overlap_s >= self.chunk_s:
            raise ValueError(f"AUDIO_OVERLAP_S ({self.overlap_s}) must be less than AUDIO_CHUNK_S ({self.chunk_s})")
        return self

    @property
    def wav_path(self) -> Path | None:
        """The WAV file to replay, or None when the source is a device."""
        return Path(self.source) if self.source.lower().endswith(".wav") else None

    @property
    def hop_s(self) -> float:
        """New audio per chunk: the chunk minus its overlap with the previous one."""
        return self.chunk_s - self.overlap_s
