"""The one module that talks to PortAudio (through sounddevice): find, check, open and stream an input device.

sounddevice loads libportaudio2 when it is imported and raises OSError without it; the import therefore happens
here, lazily, on every attempt to open, and every failure (no library, no device, a bad name or index, a refused
sample rate, a stream that dies) becomes a `SourceError` with a message that says what to do. The capture loop
shows that message in /health and retries with backoff; nothing here ever takes the service down.

The PortAudio callback only copies into the ring buffer and counts overflows: no logging, no allocation beyond
the copy, no lock, so it never blocks the audio thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from korall_workloads.audio.ringbuffer import RingBuffer
from korall_workloads.audio.source import SourceError, StreamFormat

STALL_S = 5.0
"""No callback for this long means the device is gone even if PortAudio still calls the stream active."""


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into a clear `SourceError`."""
    try:
        import sounddevice
    except OSError as exc:
        raise SourceError(
            f"{exc}: install the libportaudio2 package (the korall audio image has it) to capture from a microphone,"
            " or set AUDIO_SOURCE to a WAV file"
        ) from exc
    return sounddevice


def parse_device(source: str) -> int | str | None:
    """`default` -> PortAudio's default input, digits -> a device index, anything else -> a name (substring)."""
    text = source.strip()
    if text.lower() == "default":
        return None
    if text.isdigit():
        return int(text)
    return text


def list_input_devices(sd: Any) -> list[str]:
    """`index: name` of every device with input channels."""
    try:
        devices = sd.query_devices()
    except Exception as exc:
        raise SourceError(f"cannot list audio devices: {exc}") from exc
    return [f"{index}: {dev['name']}" for index, dev in enumerate(devices) if dev.get("max_input_channels", 0) > 0]


class DeviceSource:
    """A sounddevice InputStream feeding a ring buffer."""

    def __init__(
        self,
        source: str,
        sample_rate: int,
        channels: int,
        *,
        loader: Callable[[], ModuleType] = load_sounddevice,
        stall_s: float = STALL_S,
    ) -> None:
        self.source = source
        self.sample_rate = sample_rate
        self.channels = channels
        self._loader = loader
        self._stall_s = stall_s
        self._sd: Any = None
        self._stream: Any = None
        self._ring: RingBuffer | None = None
        self._finished = False
        self._last_callback = 0.0
        self._overflows = 0

    @property
    def overflows(self) -> int:
        return self._overflows

    def open(self) -> StreamFormat:
        sd = self._loader()
        self._sd = sd
        inputs = list_input_devices(sd)
        if not inputs:
            raise SourceError(
                "no audio input device found: plug in a microphone (in a container, map /dev/snd and join the "
                "audio group), or set AUDIO_SOURCE to a WAV file"
            )
        device = parse_device(self.source)
        available = "; ".join(inputs)
        try:
            sd.check_input_settings(device=device, channels=self.channels, samplerate=self.sample_rate, dtype="float32")
        except ValueError as exc:  # no such name or index, or too many channels
            raise SourceError(f"input device {self.source!r} unusable: {exc}. Available inputs: {available}") from exc
        except Exception as exc:  # sd.PortAudioError: an unsupported rate or channel count, a vanished index
            raise SourceError(
                f"input device {self.source!r} rejects {self.sample_rate} Hz x {self.channels} ch float32: {exc}. "
                f"Available inputs: {available}"
            ) from exc
        try:
            name = sd.query_devices(device, "input")["name"]
        except Exception:
            name = str(self.source)
        return StreamFormat(self.sample_rate, self.channels, f"device {name!r}")

    def start(self, ring: RingBuffer) -> None:
        self._ring = ring
        self._finished = False
        self._last_callback = time.monotonic()
        try:
            self._stream = self._sd.InputStream(
                device=parse_device(self.source),
                channels=self.channels,
                samplerate=self.sample_rate,
                dtype="float32",
                latency="high",
                callback=self._callback,
                finished_callback=self._on_finished,
            )
            self._stream.start()
        except Exception as exc:
            self.close()
            raise SourceError(f"cannot open input stream on {self.source!r}: {exc}") from exc

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's audio thread: copy and count, nothing else."""
        if status and status.input_overflow:
            self._overflows += 1
        self._last_callback = time.monotonic()
        assert self._ring is not None
        self._ring.write(indata)

    def _on_finished(self) -> None:
        self._finished = True

    def check(self) -> str | None:
        if self._stream is None:
            return "input stream not started"
        if self._finished or not self._stream.active:
            return f"input stream on {self.source!r} stopped (device unplugged or reset?)"
        silent_for = time.monotonic() - self._last_callback
        if silent_for > self._stall_s:
            return f"no audio from {self.source!r} for {silent_for:.1f} s"
        return None

    def ended_early(self) -> str | None:
        return None  # a device never ends by itself: a stopped stream is a failure (check), reopened

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # Each step on its own: a stream whose device vanished may refuse the abort, and must still be freed.
            # Closing a dead stream must not raise from cleanup either.
            with contextlib.suppress(Exception):
                stream.abort()
            with contextlib.suppress(Exception):
                stream.close()
