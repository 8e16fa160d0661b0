"""What every audio source offers the capture loop: open, start writing into a ring buffer, report trouble, close.

A microphone (`device.DeviceSource`) and a WAV replay (`wavfile.WavSource`) implement the same protocol, so the
processing after the ring buffer is one code path for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from korall_workloads.audio.ringbuffer import RingBuffer


class SourceError(Exception):
    """The source cannot be opened or stopped delivering audio; the message is shown in /health and the log."""


@dataclass(frozen=True)
class StreamFormat:
    sample_rate: int
    channels: int
    description: str


class AudioSource(Protocol):
    def open(self) -> StreamFormat:
        """Check that the source can deliver audio and say in which format; raise `SourceError` if not."""
        ...

    def start(self, ring: RingBuffer) -> None:
        """Begin writing samples into `ring` from another thread; raise `SourceError` if that fails."""
        ...

    def check(self) -> str | None:
        """None while healthy, else why the running source failed (the capture loop then reopens it)."""
        ...

    def ended_early(self) -> str | None:
        """Once a finite source has ended: why it ended sooner than it declared (a WAV file cut short), else None.

        Not a failure: what the source held has been processed once, and the service says so in /health.
        """
        ...

    @property
    def overflows(self) -> int:
        """Overruns the source itself reported (PortAudio's input_overflow), beside the ring buffer's own."""
        ...

    def close(self) -> None: ...
