"""Replays a WAV file as if it were a microphone: the same ring buffer, the same processing after it.

Paced in real time (the default, what `make run-audio` shows) it writes 100 ms blocks on the clock and, like a
device, drops what does not fit; unpaced (AUDIO_REALTIME=false, the tests and the bench) it writes as fast as the
processing reads and waits for room instead of dropping. Reads 8/16/24/32-bit PCM with the standard library.

A file is replayed once. One cut short (a broken download: fewer bytes than its header declares, perhaps ending
inside a sample) is read in whole frames up to where its data really ends, the incomplete last frame dropped; it
then ends like a complete file, and `ended_early` says where it ended and how long its header claimed it was.
"""

from __future__ import annotations

import os
import threading
import time
import wave
from pathlib import Path

import numpy as np

from korall_workloads.audio.features import FloatArray
from korall_workloads.audio.ringbuffer import RingBuffer
from korall_workloads.audio.settings import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from korall_workloads.audio.source import SourceError, StreamFormat

BLOCK_S = 0.1


def pcm_to_float(raw: bytes, sample_width: int, channels: int) -> FloatArray:
    """Little-endian PCM bytes to (frames, channels) float32 in -1..1."""
    if sample_width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif sample_width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        data = ints.astype(np.float32) / 8388608.0
    elif sample_width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise SourceError(f"unsupported WAV sample width: {sample_width} bytes")
    return data.reshape(-1, channels)


class WavSource:
    """A WAV file delivered block by block from a thread, paced or as fast as possible."""

    def __init__(self, path: Path, *, realtime: bool = True) -> None:
        self.path = path
        self.realtime = realtime
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: str | None = None
        self._ended_early: str | None = None
        self._format: tuple[int, int, int] = (0, 0, 0)
        self._declared_frames = 0

    @property
    def overflows(self) -> int:
        return 0

    def open(self) -> StreamFormat:
        try:
            with open(self.path, "rb") as file, wave.open(file, "rb") as wav:
                rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
                declared = wav.getnframes()
                # wave stops reading at the start of the data chunk: what the file holds from here is the audio.
                held = (os.fstat(file.fileno()).st_size - file.tell()) // max(1, width * channels)
        except FileNotFoundError as exc:
            raise SourceError(f"WAV file not found: {self.path}") from exc
        except (wave.Error, EOFError, OSError) as exc:
            raise SourceError(f"cannot read {self.path} as a PCM WAV file: {exc}") from exc
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise SourceError(
                f"{self.path} is {rate} Hz, outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; resample it first "
                "(sox in.wav -r 16000 out.wav)"
            )
        if width not in (1, 2, 3, 4):
            raise SourceError(f"{self.path}: unsupported sample width {width} bytes")
        self._format = (rate, channels, width)
        self._declared_frames = declared
        self._ended_early = None
        shape = f"{rate} Hz, {channels} ch"
        if held < declared:  # say what the file holds; the header's figure only as what it claims
            shape += f"; cut short: its header declares {declared / rate:.1f} s"
        return StreamFormat(rate, channels, f"WAV file {self.path.name} ({min(held, declared) / rate:.1f} s, {shape})")

    def start(self, ring: RingBuffer) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(ring,), name="audio-wav", daemon=True)
        self._thread.start()

    def _run(self, ring: RingBuffer) -> None:
        rate, channels, width = self._format
        frame_bytes = width * channels
        block = max(1, int(rate * BLOCK_S))
        sent = 0
        partial = b""  # bytes of a frame split across reads; at the end, the incomplete last frame of a cut file
        try:
            with wave.open(str(self.path), "rb") as wav:
                began = time.monotonic()
                while not self._stop.is_set():
                    raw = wav.readframes(block)
                    if not raw:
                        if sent < self._declared_frames:
                            self._ended_early = self._describe_early_end(sent, len(partial))
                        break
                    raw = partial + raw
                    whole = len(raw) - len(raw) % frame_bytes
                    partial = raw[whole:]
                    if not whole:
                        continue
                    samples = pcm_to_float(raw[:whole], width, channels)
                    if self.realtime:
                        delay = began + sent / rate - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            break
                    else:
                        while ring.free < len(samples) and not self._stop.wait(0.002):
                            pass
                    ring.write(samples)
                    sent += len(samples)
        except Exception as exc:
            self._error = f"reading {self.path} failed: {exc}"
        finally:
            ring.close()

    def _describe_early_end(self, sent: int, dropped_bytes: int) -> str:
        rate, declared = self._format[0], self._declared_frames
        dropped = f"; a {dropped_bytes}-byte fragment of a last frame was dropped" if dropped_bytes else ""
        return (
            f"WAV file {self.path.name} ended early: at {sent / rate:.2f} s of the {declared / rate:.2f} s its header "
            f"declares (the file is cut short{dropped})"
        )

    def check(self) -> str | None:
        return self._error

    def ended_early(self) -> str | None:
        return self._ended_early

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
