"""Real speech (espeak-ng) and real noise (sox) through the whole pipeline: WAV source, ring buffer, chunking,
features, silero VAD, the event detector. Only the pacing differs from production: the WAV is read unpaced.
"""

from __future__ import annotations

import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from korall_tools.synth import RATE, Scene, Segment, write_wav
from korall_workloads.audio.capture import CaptureService, CaptureState
from korall_workloads.audio.hub import EventHub
from korall_workloads.audio.metrics import AudioMetrics
from korall_workloads.audio.settings import AudioSettings

TOLERANCE_S = 0.25


def run_wav(path: Path, **overrides: Any) -> tuple[list[dict[str, Any]], CaptureService]:
    settings = AudioSettings(source=str(path), realtime=False, **overrides)
    hub = EventHub()
    capture = CaptureService(settings, hub, AudioMetrics())
    capture.start()
    try:
        assert capture.wait_done(60), "the WAV was not processed within 60 s"
    finally:
        capture.stop()
    assert capture.state is CaptureState.FINISHED, capture.status()
    return hub.recent(limit=1000), capture


def assert_matches(events: list[dict[str, Any]], scene: Scene) -> None:
    got = [(e["type"], e["start_s"], e["end_s"]) for e in events]
    want = [(t.type, round(t.start_s, 3), round(t.end_s, 3)) for t in scene.truth]
    assert [g[0] for g in got] == [w[0] for w in want], f"got {got}, want {want}"
    for (kind, start, end), (_, t_start, t_end) in zip(got, want, strict=True):
        assert abs(start - t_start) <= TOLERANCE_S, f"{kind} starts at {start}, truth {t_start}"
        assert abs(end - t_end) <= TOLERANCE_S, f"{kind} ends at {end}, truth {t_end}"


def test_speech_and_burst_give_exactly_the_expected_events(scene_wav: tuple[Path, Scene]) -> None:
    path, scene = scene_wav
    assert [t.type for t in scene.truth] == ["silence", "speech", "silence", "loud_noise", "silence"]
    events, capture = run_wav(path)
    assert_matches(events, scene)
    assert capture.status()["audio_s"] == pytest.approx(scene.seconds, abs=0.01)
    assert capture.status()["overflows"] == {"ring": 0, "portaudio": 0}


def test_overlapping_chunks_change_features_not_events(scene_wav: tuple[Path, Scene]) -> None:
    path, scene = scene_wav
    events, capture = run_wav(path, chunk_s=2.0, overlap_s=1.0)
    assert_matches(events, scene)
    chunks = capture.hub.recent_chunks(120)
    assert len(chunks) == pytest.approx(scene.seconds, abs=1)  # a 1 s hop
    assert chunks[3]["end_s"] - chunks[3]["start_s"] == pytest.approx(2.0)
    assert chunks[3]["start_s"] == pytest.approx(chunks[2]["start_s"] + 1.0)


def test_48k_stereo_file_gives_the_same_events(scene_wav: tuple[Path, Scene], audio_dir: Path) -> None:
    """The decimation path: a 48 kHz two-channel file (each sample repeated, the second channel at half level)."""
    _, scene = scene_wav
    upsampled = np.repeat(scene.samples, 3)
    stereo = np.stack([upsampled, upsampled * 0.5], axis=1)
    pcm = (np.clip(stereo, -1, 1) * 32767).astype("<i2")
    out = audio_dir / "scene48k_stereo.wav"
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes(pcm.tobytes())
    events, _ = run_wav(out)
    assert_matches(events, scene)


@pytest.mark.parametrize("rate", [44_100, 8_000])
def test_other_capture_rates_give_the_same_events(scene_wav: tuple[Path, Scene], audio_dir: Path, rate: int) -> None:
    """The scene resampled by sox to 44.1 kHz (a common USB microphone rate) and to 8 kHz (telephone band)."""
    path, scene = scene_wav
    out = audio_dir / f"scene{rate}.wav"
    subprocess.run(["sox", str(path), "-r", str(rate), str(out)], check=True)
    events, capture = run_wav(out)
    assert_matches(events, scene)
    assert capture.status()["source_description"].endswith(f"{rate} Hz, 1 ch)")


def test_pure_silence_gives_no_speech(audio_dir: Path) -> None:
    path = write_wav(audio_dir / "silence.wav", np.zeros(5 * RATE, dtype=np.float32))
    events, _ = run_wav(path)
    assert [(e["type"], e["start_s"], e["end_s"]) for e in events] == [("silence", 0.0, 4.992)]


def test_quiet_room_tone_gives_no_speech_and_no_noise(audio_dir: Path) -> None:
    """A -60 dBFS hiss (under the -50 dBFS floor) is silence, not speech or noise."""
    rng = np.random.default_rng(5)
    hiss = (rng.standard_normal(4 * RATE) * 10 ** (-60 / 20)).astype(np.float32)
    events, _ = run_wav(write_wav(audio_dir / "hiss.wav", hiss))
    assert [e["type"] for e in events] == ["silence"]


def test_speech_under_noise_at_10db_snr_is_detected(make_scene: Callable[..., tuple[Path, Scene]]) -> None:
    segments = [
        Segment("silence", 1.5),
        Segment("speech", text="The weather will be sunny tomorrow afternoon.", voice="en-us"),
        Segment("silence", 1.5),
        Segment("speech", text="Bonjour, comment allez vous?", voice="fr"),
        Segment("silence", 1.5),
    ]
    path, scene = make_scene("noisy10", segments, snr_db=10)
    assert [t.type for t in scene.truth] == ["speech", "speech"]
    events, _ = run_wav(path)
    speech = [e for e in events if e["type"] == "speech"]
    assert len(speech) == 2, events
    assert_matches(speech, scene)
    assert not [e for e in events if e["type"] == "loud_noise"], events  # steady noise is background, not a bang


def test_loud_burst_over_background_noise_is_one_event(make_scene: Callable[..., tuple[Path, Scene]]) -> None:
    """Two bangs 1 s apart over a noisy room: two loud_noise events, the speech between them one speech event."""
    segments = [
        Segment("silence", 2.0),
        Segment("loud_noise", 0.3),
        Segment("silence", 1.0),
        Segment("speech", text="Who is there?", voice="en+f3"),
        Segment("silence", 1.0),
        Segment("loud_noise", 0.3),
        Segment("silence", 1.0),
    ]
    path, scene = make_scene("bangs", segments, snr_db=20)
    events, _ = run_wav(path)
    assert_matches(events, scene)


def test_realtime_replay_is_paced_like_a_microphone(audio_dir: Path) -> None:
    """AUDIO_REALTIME=true (what `make run-audio` uses) delivers 2 s of audio in about 2 s, not at full speed."""
    path = write_wav(audio_dir / "two_seconds.wav", np.zeros(2 * RATE, dtype=np.float32))
    began = time.monotonic()
    settings = AudioSettings(source=str(path), realtime=True)
    capture = CaptureService(settings, EventHub(), AudioMetrics())
    capture.start()
    try:
        assert capture.wait_done(10)
    finally:
        capture.stop()
    assert 1.8 <= time.monotonic() - began <= 6.0  # paced, with room for a loaded machine
    assert capture.status()["audio_s"] == pytest.approx(2.0)
