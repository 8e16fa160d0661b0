"""Device paths: no PortAudio (for real on a machine without libportaudio2), and, simulated with a fake
`sounddevice` module (audio_fakes.py; no microphone exists here), a bad device name or index, an unsupported
rate, no input device at all, a stream that delivers real speech with overflow flags, and a device that dies.
In every case the service stays up, says why in its status, and retries with backoff.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import pytest
from audio_fakes import FakeDevice, FakeSoundDevice, PortAudioError
from korall_tools.synth import Scene
from korall_workloads.audio import capture as capture_module
from korall_workloads.audio.capture import CaptureService, CaptureState
from korall_workloads.audio.device import DeviceSource, load_sounddevice, parse_device
from korall_workloads.audio.hub import EventHub
from korall_workloads.audio.metrics import AudioMetrics
from korall_workloads.audio.ringbuffer import RingBuffer
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.source import SourceError


def portaudio_loads() -> bool:
    try:
        load_sounddevice()
    except SourceError:
        return False
    return True


def fake_loader(fake: FakeSoundDevice) -> Callable[[], ModuleType]:
    return lambda: cast(ModuleType, fake)


def device_source(fake: FakeSoundDevice, source: str = "default", rate: int = 16_000, channels: int = 1) -> Any:
    return DeviceSource(source, rate, channels, loader=fake_loader(fake), stall_s=1.0)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "BACKOFF_START_S", 0.05)


def test_device_argument_parsing() -> None:
    assert parse_device("default") is None
    assert parse_device("2") == 2
    assert parse_device("hw:1,0") == "hw:1,0"
    assert parse_device("USB Audio") == "USB Audio"


@pytest.mark.skipif(portaudio_loads(), reason="libportaudio2 is installed here; the fake covers this path instead")
def test_missing_portaudio_is_a_clear_error_for_real() -> None:
    """Real: sounddevice's import fails on this machine because libportaudio2 is not installed."""
    assert importlib.util.find_spec("sounddevice") is not None
    with pytest.raises(SourceError, match=r"PortAudio library not found.*libportaudio2"):
        DeviceSource("default", 16_000, 1).open()


def real_inputs() -> list[str] | None:
    """The real input devices, or None without PortAudio."""
    if not portaudio_loads():
        return None
    from korall_workloads.audio.device import list_input_devices

    return list_input_devices(load_sounddevice())


@pytest.mark.skipif(real_inputs() != [], reason="needs libportaudio2 and no input device; the fake covers this path")
def test_no_input_device_is_a_clear_error_for_real() -> None:
    """Real where libportaudio2 is installed on a machine without a sound card (PortAudio lists no input)."""
    with pytest.raises(SourceError, match=r"no audio input device found.*map /dev/snd"):
        DeviceSource("default", 16_000, 1).open()


def test_missing_portaudio_keeps_the_service_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real where PortAudio is missing; where it is present, its absence is simulated by the same OSError."""

    def no_portaudio() -> ModuleType:
        raise SourceError("PortAudio library not found: install the libportaudio2 package")

    loader = load_sounddevice if not portaudio_loads() else no_portaudio
    settings = AudioSettings(source="default", retry_max_s=0.1)
    capture = CaptureService(
        settings,
        EventHub(),
        AudioMetrics(),
        source_factory=lambda s: DeviceSource(s.source, s.sample_rate, s.channels, loader=loader),
    )
    capture.start()
    try:
        wait_for(lambda: capture.attempts >= 3)
        status = capture.status()
        assert status["state"] == "error"
        assert "PortAudio library not found" in status["error"]
        assert status["next_retry_s"] <= 0.1
    finally:
        capture.stop()


def test_no_input_device_at_all() -> None:
    fake = FakeSoundDevice(devices=[FakeDevice("HDMI output", max_input_channels=0)])
    with pytest.raises(SourceError, match=r"no audio input device found.*map /dev/snd"):
        device_source(fake).open()


def test_a_bad_device_name_lists_the_available_inputs() -> None:
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device"), FakeDevice("pulse")])
    with pytest.raises(SourceError) as err:
        device_source(fake, "Blue Yeti").open()
    message = str(err.value)
    assert "'Blue Yeti' unusable: No input device matching 'Blue Yeti'" in message
    assert "Available inputs: 0: USB PnP Sound Device; 1: pulse" in message


def test_a_bad_device_index() -> None:
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device")])
    with pytest.raises(SourceError, match="'7' rejects 16000 Hz x 1 ch float32: Error querying device 7"):
        device_source(fake, "7").open()


def test_an_unsupported_sample_rate_or_channel_count() -> None:
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device", max_input_channels=1, rates=(48_000,))])
    with pytest.raises(SourceError, match=r"rejects 16000 Hz x 1 ch float32: .*Invalid sample rate"):
        device_source(fake, "USB").open()
    with pytest.raises(SourceError, match="Invalid number of channels"):
        device_source(fake, "USB", rate=48_000, channels=2).open()
    fmt = device_source(fake, "USB", rate=48_000).open()
    assert (fmt.sample_rate, fmt.channels, fmt.description) == (48_000, 1, "device 'USB PnP Sound Device'")


def run_device(fake: FakeSoundDevice, **overrides: Any) -> tuple[CaptureService, EventHub, AudioMetrics]:
    settings = AudioSettings(**{"source": "USB", "retry_max_s": 0.2, **overrides})
    hub, metrics = EventHub(), AudioMetrics()
    capture = CaptureService(
        settings,
        hub,
        metrics,
        source_factory=lambda s: DeviceSource(s.source, s.sample_rate, s.channels, loader=fake_loader(fake)),
    )
    capture.start()
    return capture, hub, metrics


def test_a_device_stream_runs_real_speech_through_the_same_pipeline(scene_wav: tuple[Path, Scene]) -> None:
    """The callback path: blocks from PortAudio's thread, input_overflow flags counted, events as from a WAV."""
    _, scene = scene_wav
    stereo48k = np.repeat(scene.samples, 3)
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device")], samples=stereo48k, overflow_every=50)
    capture, hub, metrics = run_device(fake, sample_rate=48_000, channels=2)
    try:
        wait_for(lambda: fake.finished_blocks and len(hub.recent()) >= 4)
        wait_for(lambda: capture.status()["overflows"]["portaudio"] == fake.flagged)
    finally:
        capture.stop()
    status = capture.status()
    assert status["state"] == "stopped"
    assert status["source_description"] == "device 'USB PnP Sound Device'"
    got = [(e["type"], e["start_s"], e["end_s"]) for e in hub.recent()]
    want = scene.truth[:4]  # the last silence stays open: a microphone never ends
    assert [g[0] for g in got] == [t.type for t in want]
    for (_, start, end), truth in zip(got, want, strict=True):
        assert abs(start - truth.start_s) <= 0.25 and abs(end - truth.end_s) <= 0.25
    assert fake.flagged == len(range(0, stereo48k.size, fake.block * 50))
    assert status["overflows"] == {"ring": 0, "portaudio": fake.flagged}
    assert metrics.overflows.labels("portaudio")._value.get() == fake.flagged


def test_a_stream_that_refuses_to_abort_is_still_closed() -> None:
    """PortAudio can fail to abort a stream whose device vanished; the stream must be closed (freed) all the same."""
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device")], samples=np.zeros(16_000, np.float32))
    source = device_source(fake)
    source.open()
    source.start(RingBuffer(32_000))
    stream = fake.streams[0]
    closed: list[bool] = []

    def abort() -> None:
        stream._stop.set()
        raise PortAudioError("Unanticipated host error [PaErrorCode -9999]")

    stream.abort = abort  # type: ignore[method-assign]
    stream.close = lambda: closed.append(True)  # type: ignore[method-assign]
    source.close()
    assert closed == [True]


def test_a_dying_device_is_reopened_with_backoff() -> None:
    fake = FakeSoundDevice(
        devices=[FakeDevice("USB PnP Sound Device")], samples=np.zeros(16_000 * 60, np.float32), die_after_blocks=20
    )
    capture, _, metrics = run_device(fake)
    try:
        wait_for(lambda: capture.attempts >= 3)
        wait_for(lambda: capture.state is CaptureState.CAPTURING)
    finally:
        capture.stop()
    assert len(fake.streams) >= 3
    assert metrics.source_errors._value.get() >= 2


def retry_waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the capture loop announced, in order ("... (retrying in 0.4 s)")."""
    found = (re.search(r"\(retrying in ([\d.]+) s\)", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


def test_a_device_that_dies_at_once_every_time_is_retried_ever_more_slowly(caplog: pytest.LogCaptureFixture) -> None:
    """Each open succeeds and the stream dies straight away: the wait doubles (0.05, 0.1, 0.2, 0.4 s cap) instead
    of starting over at every successful open."""
    fake = FakeSoundDevice(
        devices=[FakeDevice("USB PnP Sound Device")], samples=np.zeros(16_000 * 60, np.float32), die_after_blocks=2
    )
    capture, _, _ = run_device(fake, retry_max_s=0.4)
    try:
        wait_for(lambda: len(retry_waits(caplog)) >= 5, timeout=20)
    finally:
        capture.stop()
    waits = retry_waits(caplog)
    assert waits[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]
    assert len(fake.streams) >= 5  # every attempt did open a stream


def test_a_device_that_ran_for_a_while_before_dying_is_retried_soon_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that delivered audio for STABLE_S before it died is a new failure: the wait starts over."""
    monkeypatch.setattr(capture_module, "STABLE_S", 0.3)  # each stream here runs at least 0.5 s (the read timeout)
    fake = FakeSoundDevice(
        devices=[FakeDevice("USB PnP Sound Device")], samples=np.zeros(16_000 * 60, np.float32), die_after_blocks=2
    )
    capture, _, _ = run_device(fake, retry_max_s=0.4)
    try:
        wait_for(lambda: len(retry_waits(caplog)) >= 3, timeout=20)
    finally:
        capture.stop()
    assert retry_waits(caplog)[:3] == [0.05, 0.05, 0.05]


def test_a_device_that_appears_later_is_picked_up() -> None:
    """No device at first (error state, retrying), then one is plugged in: capturing without a restart."""
    fake = FakeSoundDevice(devices=[], samples=np.zeros(16_000 * 60, np.float32))
    capture, _, _ = run_device(fake)
    try:
        wait_for(lambda: capture.attempts >= 2)
        assert capture.state is CaptureState.ERROR
        assert "no audio input device found" in (capture.error or "")
        fake.devices.append(FakeDevice("USB PnP Sound Device"))
        wait_for(lambda: capture.state is CaptureState.CAPTURING)
        assert capture.error is None
    finally:
        capture.stop()


def test_processing_that_falls_behind_drops_and_counts_ring_overflows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A VAD slowed down on purpose and a 2 s ring: the callback keeps writing, never waits, and counts the loss."""
    from korall_workloads.audio.vad import SileroVad

    class SlowVad(SileroVad):
        def probabilities(self, frames: Any) -> Any:
            time.sleep(0.2)
            return super().probabilities(frames)

    monkeypatch.setattr(capture_module, "RING_SECONDS", 2.0)
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device")], samples=np.zeros(16_000 * 30, np.float32))
    settings = AudioSettings(source="USB")
    metrics = AudioMetrics()
    capture = CaptureService(
        settings,
        EventHub(),
        metrics,
        source_factory=lambda s: DeviceSource(s.source, s.sample_rate, s.channels, loader=fake_loader(fake)),
        vad_factory=SlowVad,
    )
    capture.start()
    try:
        wait_for(lambda: capture.status()["overflows"]["ring"] >= 3)
    finally:
        capture.stop()
    ring_overflows = capture.status()["overflows"]["ring"]
    assert metrics.overflows.labels("ring")._value.get() == ring_overflows
    assert any("ring buffer overflow" in r.getMessage() for r in caplog.records)
    assert capture.status()["chunks"] < 30  # most of the 30 s never reached the pipeline


def test_an_utterance_cut_by_a_dying_device_is_closed_and_time_goes_on(scene_wav: tuple[Path, Scene]) -> None:
    """The device dies 2.56 s in, mid-sentence: the speech event ends there; after the reopen, times continue."""
    _, scene = scene_wav
    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device")], samples=scene.samples, die_after_blocks=40)
    capture, hub, _ = run_device(fake)
    try:
        wait_for(lambda: len(hub.recent()) >= 4)
    finally:
        capture.stop()
    events = [(e["type"], e["start_s"], e["end_s"]) for e in hub.recent()]
    assert [kind for kind, _, _ in events[:4]] == ["silence", "speech", "silence", "speech"]
    cut = 40 * fake.block / 16_000
    assert events[1][1] == pytest.approx(scene.truth[1].start_s, abs=0.25)
    assert events[1][2] == pytest.approx(cut, abs=0.1)  # closed at the last sample heard
    assert events[2][1] == pytest.approx(cut, abs=0.1)  # the replayed stream starts with silence again
    assert events[3][1] == pytest.approx(cut + scene.truth[1].start_s, abs=0.25)
    starts = [start for _, start, _ in events]
    assert starts == sorted(starts)


def test_a_processing_failure_is_an_error_state_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    """A VAD that breaks on its third batch: the service reports it and starts over instead of hanging."""
    from korall_workloads.audio.vad import SileroVad

    class BrokenVad(SileroVad):
        calls = 0

        def probabilities(self, frames: Any) -> Any:
            BrokenVad.calls += 1
            if BrokenVad.calls % 3 == 0:
                raise RuntimeError("onnxruntime session lost")
            return super().probabilities(frames)

    fake = FakeSoundDevice(devices=[FakeDevice("USB PnP Sound Device")], samples=np.zeros(16_000 * 60, np.float32))
    settings = AudioSettings(source="USB", retry_max_s=0.2)
    metrics = AudioMetrics()
    capture = CaptureService(
        settings,
        EventHub(),
        metrics,
        source_factory=lambda s: DeviceSource(s.source, s.sample_rate, s.channels, loader=fake_loader(fake)),
        vad_factory=BrokenVad,
    )
    capture.start()
    try:
        wait_for(lambda: capture.attempts >= 3)
    finally:
        capture.stop()
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "retrying" in r.getMessage()]
    assert failures and all("processing failed: RuntimeError: onnxruntime session lost" in m for m in failures)
    assert metrics.source_errors._value.get() >= 2
    assert len(fake.streams) >= 3  # reopened each time
