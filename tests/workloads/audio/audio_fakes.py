"""A stand-in for the `sounddevice` module, for the paths this machine cannot show for real.

There is no microphone here (and, unless libportaudio2 was installed by hand, no PortAudio either), so a bad
device name, an unsupported rate, a device list, a running stream and its overflow flags can only be simulated.
The fake mirrors sounddevice's API and its errors: `ValueError("No input device matching ...")` from
`check_input_settings` for an unknown name, `PortAudioError("Invalid sample rate ...")` for a refused rate, and an
`InputStream` whose callback is called from its own thread with (frames, channels) float32 blocks and
`CallbackFlags`-like status objects. It streams real samples (the espeak-ng scenes) so what follows the callback
is the real pipeline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PortAudioError(Exception):
    pass


@dataclass
class Flags:
    input_overflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow


@dataclass
class FakeDevice:
    name: str
    max_input_channels: int = 2
    rates: tuple[int, ...] = (16_000, 48_000)


@dataclass
class FakeSoundDevice:
    devices: list[FakeDevice] = field(default_factory=list)
    samples: np.ndarray | None = None  # what a stream delivers (mono, repeated per channel)
    block: int = 1024
    overflow_every: int = 0  # flag input_overflow on every Nth block
    die_after_blocks: int | None = None  # the stream stops (device unplugged) after this many blocks
    streams: list[FakeStream] = field(default_factory=list)
    flagged: int = 0  # blocks delivered with input_overflow set
    finished_blocks: bool = False  # the last stream delivered all its samples
    PortAudioError: type[Exception] = PortAudioError

    def _resolve(self, device: int | str | None) -> FakeDevice:
        inputs = [d for d in self.devices if d.max_input_channels > 0]
        if device is None:
            if not inputs:
                raise PortAudioError("Error querying device -1")
            return inputs[0]
        if isinstance(device, int):
            if not 0 <= device < len(self.devices):
                raise PortAudioError(f"Error querying device {device}")
            return self.devices[device]
        matches = [d for d in inputs if device.lower() in d.name.lower()]
        if not matches:
            raise ValueError(f"No input device matching {device!r}")
        return matches[0]

    def query_devices(self, device: int | str | None = None, kind: str | None = None) -> Any:
        if device is None and kind is None:
            return [{"name": d.name, "max_input_channels": d.max_input_channels} for d in self.devices]
        dev = self._resolve(device)
        return {"name": dev.name, "max_input_channels": dev.max_input_channels}

    def check_input_settings(
        self, device: int | str | None = None, channels: int = 1, dtype: str = "float32", samplerate: int = 16_000
    ) -> None:
        dev = self._resolve(device)
        if channels > dev.max_input_channels:
            raise PortAudioError("Error opening InputStream: Invalid number of channels [PaErrorCode -9998]")
        if samplerate not in dev.rates:
            raise PortAudioError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, **kwargs: Any) -> FakeStream:
        stream = FakeStream(self, **kwargs)
        self.streams.append(stream)
        return stream


class FakeStream:
    def __init__(
        self,
        fake: FakeSoundDevice,
        *,
        callback: Callable[..., None],
        finished_callback: Callable[[], None],
        channels: int,
        **_: Any,
    ) -> None:
        self.fake = fake
        self.callback = callback
        self.finished_callback = finished_callback
        self.channels = channels
        self.active = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.active = True
        self._thread.start()

    def _run(self) -> None:
        samples = self.fake.samples if self.fake.samples is not None else np.zeros(0, dtype=np.float32)
        for n, at in enumerate(range(0, samples.size, self.fake.block)):
            if self._stop.is_set():
                return
            if self.fake.die_after_blocks is not None and n >= self.fake.die_after_blocks:
                self.active = False
                self.finished_callback()
                return
            block = np.repeat(samples[at : at + self.fake.block, None], self.channels, axis=1)
            flags = Flags(input_overflow=bool(self.fake.overflow_every) and n % self.fake.overflow_every == 0)
            self.callback(block, len(block), None, flags)
            self.fake.flagged += flags.input_overflow
            time.sleep(0.0005)  # much faster than real time, though slower than the consumer
        self.fake.finished_blocks = True

    def abort(self) -> None:
        self._stop.set()
        self.active = False

    def close(self) -> None:
        self._thread.join(timeout=2)
