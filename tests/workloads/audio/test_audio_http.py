"""The HTTP service for real: uvicorn on a loopback port (in-process, and once as `python -m
korall_workloads.audio` exactly as `make run-audio` starts it) with a WAV source of espeak-ng speech.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from korall_contract import AudioEnv, env_names
from korall_tools.synth import Scene
from korall_workloads.audio.app import create_app
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.source import AudioSource
from korall_workloads.audio.wavfile import WavSource
from service_process import stop_with_a_live_stream_open

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_json(client: httpx.Client, path: str, predicate: Callable[[Any], bool], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"{path} never satisfied the condition; last: {body}"
        time.sleep(0.05)


def test_events_of_a_processed_wav_over_http(scene_wav: tuple[Path, Scene]) -> None:
    path, scene = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False))
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        health = wait_json(client, "/health", lambda b: b["capture"]["state"] == "finished")
        assert health["status"] == "ok" and health["capture"]["error"] is None
        assert client.get("/ready").json() == {"ready": True, "state": "finished"}

        events = client.get("/events").json()["events"]
        assert [e["type"] for e in events] == [t.type for t in scene.truth]
        for event, truth in zip(events, scene.truth, strict=True):
            assert abs(event["start_s"] - truth.start_s) <= 0.25 and abs(event["end_s"] - truth.end_s) <= 0.25
        assert [e["id"] for e in events] == [1, 2, 3, 4, 5]

        speech = client.get("/events", params={"type": "speech"}).json()["events"]
        assert [e["id"] for e in speech] == [2]
        both = client.get("/events", params=[("type", "speech"), ("type", "loud_noise")]).json()["events"]
        assert [e["type"] for e in both] == ["speech", "loud_noise"]
        assert [e["id"] for e in client.get("/events", params={"after_id": 3}).json()["events"]] == [4, 5]
        late = client.get("/events", params={"since_s": scene.truth[3].start_s}).json()["events"]
        assert [e["type"] for e in late] == ["loud_noise", "silence"]
        assert client.get("/events", params={"limit": 2}).json()["count"] == 2

        chunks = client.get("/chunks", params={"limit": 120}).json()["chunks"]
        assert len(chunks) == int(scene.seconds) + 1  # 1 s chunks and the partial last one
        loudest = max(chunks, key=lambda c: c["dbfs"])
        burst = scene.truth[3]
        assert loudest["start_s"] < burst.end_s and loudest["end_s"] > burst.start_s  # a chunk of the burst
        noisy = (min(loudest["end_s"], burst.end_s) - max(loudest["start_s"], burst.start_s)) / 1.0
        assert loudest["zcr"] == pytest.approx(0.5 * noisy, abs=0.05)  # white noise crosses every other sample
        assert loudest["peak"] > 0.5

        metrics = client.get("/metrics").text
        assert 'korall_audio_events_total{type="speech"} 1.0' in metrics
        assert 'korall_audio_events_total{type="silence"} 3.0' in metrics
        assert f"korall_audio_chunks_total {float(len(chunks))}" in metrics
        assert "korall_audio_chunk_processing_seconds_count" in metrics
        assert 'korall_audio_overflows_total{where="ring"} 0.0' in metrics


def test_bad_queries_get_the_json_error_shape(scene_wav: tuple[Path, Scene]) -> None:
    path, _ = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False))
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for params in ({"type": "bogus"}, {"limit": 0}, {"since_s": -1}, {"after_id": "x"}):
            resp = client.get("/events", params=params)
            assert resp.status_code == 422, params
            assert resp.json()["error"]["code"] == "invalid_input"
        # The stream and its place among live clients both read `type`: its error is said once, not twice.
        stream = client.get("/events/stream", params={"type": "bogus"})
        assert stream.status_code == 422
        assert stream.json()["error"]["message"] == "query.type.0: Input should be 'silence', 'speech' or 'loud_noise'"
        missing = client.get("/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert 'korall_audio_http_errors_total{code="invalid_input"} 5.0' in client.get("/metrics").text


def test_a_missing_device_is_an_error_state_not_a_crash() -> None:
    """This machine has no microphone (and no PortAudio): the service answers, says why, and keeps retrying."""
    app = create_app(AudioSettings(source="default", retry_max_s=0.2))
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        health = wait_json(client, "/health", lambda b: b["capture"]["attempts"] >= 3)
        assert health["status"] == "degraded"
        assert health["capture"]["state"] == "error"
        assert "PortAudio" in health["capture"]["error"] or "no audio input device" in health["capture"]["error"]
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        assert health["capture"]["error"] in ready.json()["error"]["message"]
        assert "korall_audio_capturing 0.0" in client.get("/metrics").text
        assert client.get("/events").json() == {"events": [], "count": 0}


def test_live_stream_delivers_every_event_as_it_happens(scene_wav: tuple[Path, Scene]) -> None:
    """The WAV source opens only once a live client is connected, so the stream must carry all five events."""
    path, scene = scene_wav
    apps: list[FastAPI] = []

    def after_a_client_connects(settings: AudioSettings) -> AudioSource:
        deadline = time.monotonic() + 20
        while apps[0].state.hub.subscribers == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return WavSource(path, realtime=False)

    app = create_app(AudioSettings(source=str(path), realtime=False), source_factory=after_a_client_connects)
    apps.append(app)
    received: list[tuple[str, dict[str, Any]]] = []
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("GET", "/events/stream") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    received.append((kind, json.loads(line.removeprefix("data: "))))
                    if len(received) == len(scene.truth):
                        break
        assert [k for k, _ in received] == [t.type for t in scene.truth]
        assert [d for _, d in received] == client.get("/events").json()["events"]
        wait_json(client, "/health", lambda _: app.state.hub.subscribers == 0)


def test_a_wav_cut_inside_a_sample_is_processed_once_and_health_says_where_it_ended(audio_dir: Path) -> None:
    """A broken download: a real espeak-ng WAV cut one byte after a sample, 1.5 s into the speech its header declares.

    The file is read in whole samples up to where it ends, once: one speech event, one attempt, `finished`, and
    /health says (degraded, with a warning) at what time it ended and how long its header claimed it was. Before,
    the incomplete last sample failed the read, and the file was replayed every 0.5 s for ever.
    """
    full = audio_dir / "espeak-full.wav"
    text = "Please turn off the lights in the kitchen."
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(full), text], check=True, capture_output=True)
    with wave.open(str(full)) as wav:
        rate, width, declared = wav.getframerate(), wav.getsampwidth(), wav.getnframes()
    assert wav.getnchannels() == 1 and declared / rate > 2.0
    data = full.read_bytes()
    audio_starts = data.index(b"data") + 8
    kept = round(1.5 * rate)
    cut = audio_dir / "espeak-cut.wav"
    cut.write_bytes(data[: audio_starts + kept * width + 1])

    app = create_app(AudioSettings(source=str(cut), realtime=False))
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        health = wait_json(client, "/health", lambda b: b["capture"]["state"] == "finished")
        time.sleep(0.8)  # longer than the first retry wait: a replay would have begun by now
        again = client.get("/health").json()
        events = client.get("/events").json()["events"]
        assert client.get("/ready").status_code == 200
        assert [client.head(path).status_code for path in ("/health", "/ready", "/")] == [200] * 3  # RFC 9110
        metrics = client.get("/metrics").text
    capture = again["capture"]
    assert again["status"] == "degraded" and capture["state"] == "finished" and capture["error"] is None
    assert capture["attempts"] == 1 and capture == health["capture"]
    assert capture["audio_s"] == pytest.approx(kept / rate, abs=0.001)
    assert capture["warning"] == (
        f"WAV file espeak-cut.wav ended early: at 1.50 s of the {declared / rate:.2f} s its header declares "
        "(the file is cut short; a 1-byte fragment of a last frame was dropped)"
    )
    assert capture["source_description"] == (
        f"WAV file espeak-cut.wav (1.5 s, {rate} Hz, 1 ch; cut short: its header declares {declared / rate:.1f} s)"
    )
    assert [e["type"] for e in events] == ["speech"]
    assert events[0]["end_s"] <= kept / rate + 0.05
    assert "korall_audio_source_errors_total 0.0" in metrics
    assert 'korall_audio_events_total{type="speech"} 1.0' in metrics


def test_too_many_live_clients_get_503(scene_wav: tuple[Path, Scene]) -> None:
    path, _ = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False))
    app.state.hub.max_clients = 0
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        resp = client.get("/events/stream")
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "too_many_clients"


def test_a_client_that_loses_the_race_for_the_last_place_gets_a_503_not_a_stream(scene_wav: tuple[Path, Scene]) -> None:
    """The place is taken before the stream starts, in one step with the room check (issue 15: a dependency that
    also gives the place back however the request ends), so there is no race left to lose after the 200: the
    last place going to another client at that very moment (simulated: the hub is made full just before the
    client joins; the check itself stays real) gives the plain 503 JSON error."""
    path, _ = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False))
    hub = app.state.hub
    real_join = hub.join

    def join_after_the_last_place_went(*args: Any, **kwargs: Any) -> Any:
        hub.max_clients = 0
        return real_join(*args, **kwargs)

    hub.join = join_after_the_last_place_went
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        resp = client.get("/events/stream")
        assert resp.status_code == 503
        error = resp.json()["error"]
        assert error["code"] == "too_many_clients" and "reconnect later" in error["message"]
        assert hub.subscribers == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_service_entry_point_on_a_wav_file(scene_wav: tuple[Path, Scene]) -> None:
    """`python -m korall_workloads.audio` with AUDIO_SOURCE=some.wav, as `make run-audio` runs it."""
    path, scene = scene_wav
    port = free_port()
    env = {**os.environ, "AUDIO_SOURCE": str(path), "AUDIO_REALTIME": "false", "PORT": str(port), "LOG_JSON": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "korall_workloads.audio"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/health").json()["capture"]["state"] == "finished":
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the service never became ready"
                time.sleep(0.1)
            assert client.get("/ready").status_code == 200
            events = client.get("/events").json()["events"]
        assert [e["type"] for e in events] == [t.type for t in scene.truth]
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [r["event"]["type"] for r in logged if "event" in r] == [t.type for t in scene.truth]


def test_the_service_stops_promptly_with_a_live_stream_open(scene_wav: tuple[Path, Scene]) -> None:
    """SIGINT (as Kubernetes sends SIGTERM) with an SSE client connected ends the stream and the process in seconds."""
    path, _ = scene_wav
    port = free_port()
    env = {**os.environ, "AUDIO_SOURCE": str(path), "AUDIO_REALTIME": "false", "PORT": str(port)}
    log = stop_with_a_live_stream_open(
        "korall_workloads.audio",
        env,
        f"http://127.0.0.1:{port}",
        up_path="/ready",
        stream_path="/events/stream",
        headers={"Last-Event-ID": "0"},
    )
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AUDIO_CHUNK_S": "9"}, "AUDIO_CHUNK_S='9': Input should be less than or equal to 5"),
        (
            {"AUDIO_SAMPLE_RATE": "4000"},
            "AUDIO_SAMPLE_RATE=4000: Input should be 8000, 16000, 22050, 32000, 44100 or 48000",
        ),
        ({"AUDIO_OVERLAP_S": "1.0"}, "AUDIO_OVERLAP_S (1.0) must be less than AUDIO_CHUNK_S (1.0)"),
        ({"AUDIO_SILENCE_DBFS": "loud"}, "AUDIO_SILENCE_DBFS='loud': Input should be a valid number"),
        ({"PORT": "70000"}, "PORT='70000'"),
    ],
)
def test_a_bad_configuration_is_one_line_and_a_non_zero_exit(env: dict[str, str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "korall_workloads.audio"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("korall audio: invalid configuration: ")
    assert expected in lines[0]


def test_settings_read_the_contract_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names(AudioEnv):  # whatever the calling shell exported (make exports nothing, a user might)
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AUDIO_SOURCE": "hw:1,0",
        "AUDIO_SAMPLE_RATE": "48000",
        "AUDIO_CHANNELS": "2",
        "AUDIO_CHUNK_S": "2",
        "AUDIO_OVERLAP_S": "0.5",
        "AUDIO_SILENCE_DBFS": "-45",
        "AUDIO_LOUD_DBFS": "-3",
        "AUDIO_LOUD_JUMP_DB": "30",
        "AUDIO_VAD_THRESHOLD": "0.6",
        "AUDIO_REALTIME": "false",
        "AUDIO_RETRY_MAX_S": "5",
        "LOG_LEVEL": "debug",
    }.items():
        monkeypatch.setenv(name, value)
    s = AudioSettings()
    assert (s.source, s.sample_rate, s.channels, s.chunk_s, s.overlap_s, s.hop_s) == ("hw:1,0", 48000, 2, 2, 0.5, 1.5)
    assert (s.silence_dbfs, s.loud_dbfs, s.loud_jump_db, s.vad_threshold) == (-45, -3, 30, 0.6)
    assert (s.realtime, s.retry_max_s, s.log_level, s.port, s.wav_path) == (False, 5, "DEBUG", 5053, None)
    monkeypatch.setenv("AUDIO_SOURCE", "/data/Replay.WAV")
    assert AudioSettings().wav_path == Path("/data/Replay.WAV")


def test_a_reconnecting_client_gets_what_it_missed(scene_wav: tuple[Path, Scene]) -> None:
    """EventSource's Last-Event-ID: the events after that id come first, from the history."""
    path, scene = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_json(client, "/health", lambda b: b["capture"]["state"] == "finished")
        ids: list[str] = []
        with client.stream("GET", "/events/stream", headers={"Last-Event-ID": "2"}) as resp:
            for line in resp.iter_lines():
                if line.startswith("id: "):
                    ids.append(line.removeprefix("id: "))
                    if len(ids) == len(scene.truth) - 2:
                        break
        assert ids == ["3", "4", "5"]
        bad = client.get("/events/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
