"""The WAV source's formats and failures, and the event hub's bounds (history and slow live clients)."""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from korall_workloads.audio.capture import CaptureService, CaptureState
from korall_workloads.audio.events import AudioEvent
from korall_workloads.audio.hub import EventHub
from korall_workloads.audio.metrics import AudioMetrics
from korall_workloads.audio.ringbuffer import RingBuffer
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.source import SourceError
from korall_workloads.audio.wavfile import WavSource, pcm_to_float


def test_pcm_widths_decode_to_the_same_floats() -> None:
    values = np.array([0.0, 0.5, -0.5, -1.0], dtype=np.float64)
    u8 = bytes(int(v * 128 + 128) for v in values)
    i16 = (values * 32768).astype("<i2").tobytes()
    i24 = b"".join(int(v * 8388608).to_bytes(3, "little", signed=True) for v in values)
    i32 = (values * 2147483648).astype("<i4").tobytes()
    for raw, width in ((u8, 1), (i16, 2), (i24, 3), (i32, 4)):
        assert pcm_to_float(raw, width, 1)[:, 0].tolist() == values.tolist(), width
    stereo = pcm_to_float(np.array([1, 2, 3, 4], dtype="<i2").tobytes(), 2, 2)
    assert stereo.shape == (2, 2)


def test_a_24_bit_wav_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "s24.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(3)
        wav.setframerate(16_000)
        wav.writeframes(bytes(3 * 16_000))
    fmt = WavSource(path).open()
    assert (fmt.sample_rate, fmt.channels) == (16_000, 1)


def test_a_stereo_24_bit_wav_cut_inside_a_frame_is_read_in_whole_frames(tmp_path: Path) -> None:
    """Cut one byte after the left sample of a frame: every whole frame arrives, exactly, and nothing else."""
    frames = np.linspace(-0.9, 0.9, 2 * 5_000, dtype=np.float64).reshape(-1, 2)  # 5000 frames at 8 kHz
    ints = np.round(frames * 8388608).astype("<i4")
    pcm = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints.ravel())
    path = tmp_path / "cut24.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(3)
        wav.setframerate(8_000)
        wav.writeframes(pcm)
    whole = 3_001
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(pcm) + whole * 6 + 3 + 1])  # a left sample and one byte more
    source = WavSource(path, realtime=False)
    fmt = source.open()
    assert fmt.description == "WAV file cut24.wav (0.4 s, 8000 Hz, 2 ch; cut short: its header declares 0.6 s)"
    ring = RingBuffer(10_000, channels=2)
    source.start(ring)
    deadline = time.monotonic() + 10
    while not ring.closed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    source.close()
    got = ring.read(ring.available, timeout=0)
    assert got is not None and got.shape == (whole, 2)
    assert np.array_equal(got, (ints[:whole] / 8388608.0).astype(np.float32))
    assert source.check() is None
    assert source.ended_early() == (
        "WAV file cut24.wav ended early: at 0.38 s of the 0.62 s its header declares "
        "(the file is cut short; a 4-byte fragment of a last frame was dropped)"
    )


def test_missing_and_broken_wav_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="WAV file not found"):
        WavSource(tmp_path / "nope.wav").open()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not RIFF data at all")
    with pytest.raises(SourceError, match=r"cannot read .* as a PCM WAV file"):
        WavSource(junk).open()
    slow = tmp_path / "slow.wav"
    with wave.open(str(slow), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(4_000)
        wav.writeframes(bytes(800))
    with pytest.raises(SourceError, match="4000 Hz, outside 8000-192000 Hz"):
        WavSource(slow).open()


def test_a_missing_wav_keeps_retrying_until_it_appears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from korall_workloads.audio import capture as capture_module

    monkeypatch.setattr(capture_module, "BACKOFF_START_S", 0.05)
    path = tmp_path / "later.wav"
    capture = CaptureService(
        AudioSettings(source=str(path), realtime=False, retry_max_s=0.1), EventHub(), AudioMetrics()
    )
    capture.start()
    try:
        deadline = time.monotonic() + 10
        while capture.attempts < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert capture.state is CaptureState.ERROR and "WAV file not found" in (capture.error or "")
        with wave.open(str(tmp_path / "tmp.wav"), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(16_000)
            wav.writeframes(bytes(2 * 16_000))
        (tmp_path / "tmp.wav").rename(path)
        assert capture.wait_done(10)
    finally:
        capture.stop()
    assert capture.state is CaptureState.FINISHED and capture.error is None


def event(i: int) -> AudioEvent:
    return AudioEvent("speech", float(i), float(i) + 0.5, -20.0)


def test_the_history_is_bounded_and_filters_compose() -> None:
    hub = EventHub(max_events=5)
    for i in range(8):
        hub.publish(event(i) if i % 2 else AudioEvent("silence", float(i), float(i) + 0.5, -90.0))
    assert [e["id"] for e in hub.recent()] == [4, 5, 6, 7, 8]
    assert [e["id"] for e in hub.recent({"speech"})] == [4, 6, 8]
    assert [e["id"] for e in hub.recent({"speech"}, since_s=5.2)] == [6, 8]
    assert [e["id"] for e in hub.recent(after_id=6, limit=1)] == [8]


async def test_a_slow_live_client_loses_its_oldest_events_only() -> None:
    dropped: list[int] = []
    hub = EventHub(client_queue=2, on_drop=lambda: dropped.append(1))
    slow = hub.subscribe()
    only_loud = hub.subscribe({"loud_noise"})
    assert slow is not None and only_loud is not None

    def publish() -> None:  # from another thread, like the capture thread
        for i in range(5):
            hub.publish(event(i))

    worker = threading.Thread(target=publish)
    worker.start()
    worker.join()
    await asyncio.sleep(0.05)  # let the loop run the hand-overs
    got = [slow.queue.get_nowait()["id"] for _ in range(slow.queue.qsize())]
    assert got == [4, 5]
    assert slow.dropped == 3 and len(dropped) == 3
    assert only_loud.queue.empty()
    hub.unsubscribe(slow)
    hub.unsubscribe(only_loud)
    assert hub.subscribers == 0


async def test_live_clients_are_capped() -> None:
    hub = EventHub(max_clients=1)
    assert hub.subscribe() is not None
    assert hub.subscribe() is None


def test_a_client_whose_loop_is_gone_no_longer_holds_a_place() -> None:
    """A subscriber whose event loop closed without unsubscribing must not count against the cap for good."""
    hub = EventHub(max_clients=1)

    async def subscribe_and_vanish() -> None:
        assert hub.subscribe() is not None

    asyncio.run(subscribe_and_vanish())
    hub.publish(event(0))
    assert hub.subscribers == 0
