"""The audio service's events on a real broker: espeak-ng speech and a sox bang in a WAV, a real mosquitto.

The app is the real one (capture thread, silero VAD, hub, delivery) driven through its lifespan by TestClient;
the WAV is read unpaced, so the whole scene is processed in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from korall_tools.synth import Scene
from korall_workloads.audio.app import create_app
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.common.event_settings import EventsSettings
from mqtt_broker import EVENT_VALIDATOR, Mosquitto, Subscriber, wait_until

FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "heartbeat_s": 1.0}


def app_for(wav: Path, events: EventsSettings) -> TestClient:
    return TestClient(create_app(AudioSettings(source=str(wav), realtime=False), events_settings=events))


def finished(client: TestClient) -> dict[str, Any]:
    return wait_until(
        lambda: (body := client.get("/health").json())["capture"]["state"] == "finished" and body, 30, "the WAV"
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def test_every_event_of_the_wav_reaches_the_broker_as_an_audio_event(
    scene_wav: tuple[Path, Scene], broker: Mosquitto, tmp_path: Path
) -> None:
    wav, _ = scene_wav
    events = EventsSettings(mqtt_url=broker.url, spool_dir=tmp_path / "spool", source_name="mic", **FAST)
    with Subscriber(broker, ["korall/default/mic/events"]) as sub, app_for(wav, events) as client:
        finished(client)
        local = client.get("/events").json()["events"]
        assert {e["type"] for e in local} >= {"speech", "loud_noise", "silence"}
        wait_until(lambda: len(sub.events()) == len(local), 10, "every event on the broker")
        status = client.get("/health").json()["events"]
        assert status["state"] == "connected" and status["last_seq"] == len(local)
    received = sub.events()
    assert [e["seq"] for e in received] == list(range(1, len(local) + 1))
    for sent, mine in zip(received, local, strict=True):
        EVENT_VALIDATOR.validate(sent)
        assert sent["type"] == f"audio.{mine['type']}" and sent["source"]["service"] == "audio"
        assert sent["data"] == {k: mine[k] for k in ("start_s", "end_s", "duration_s", "peak_dbfs")} | {
            "local_id": mine["id"]
        }
        assert sent["end_time"] - sent["start_time"] == pytest.approx(mine["duration_s"], abs=0.002)
        assert sent["time"] == sent["end_time"] <= sent["created_time"] and "model" not in sent


@pytest.mark.parametrize("trouble", ["refused credentials", "unknown host"])
def test_a_broken_broker_leaves_the_service_working_and_every_event_spooled(
    scene_wav: tuple[Path, Scene], tmp_path: Path, trouble: str
) -> None:
    wav, _ = scene_wav
    with Mosquitto(tmp_path / "broker", users={"korall": "right"}) as broker:
        if trouble == "refused credentials":
            url, state, reason = broker.url, "refused", "refused the connection"
            extra = {"mqtt_username": "korall", "mqtt_password": "wrong"}
        else:
            url, state, reason = "mqtt://broker.invalid:1883", "unreachable", "cannot connect to mqtt://broker.invalid"
            extra = {}
        events = EventsSettings(mqtt_url=url, spool_dir=tmp_path / "spool", **FAST, **extra)
        with app_for(wav, events) as client:
            finished(client)
            body = wait_until(lambda: (b := client.get("/health").json())["events"]["state"] == state and b, 10, state)
            assert body["status"] == "ok" and body["capture"]["error"] is None  # the service itself is fine
            assert client.get("/ready").status_code == 200
            local = client.get("/events").json()["events"]
            delivery = body["events"]
            assert reason in delivery["reason"] and not delivery["connected"] and delivery["published"] == 0
            assert delivery["spool"]["depth"] == delivery["last_seq"] == len(local) >= 3
            metrics = client.get("/metrics").text
            assert f'korall_events_delivery_state{{korall_events_delivery_state="{state}"}} 1.0' in metrics
            assert f"korall_events_spool_depth {float(len(local))}" in metrics
