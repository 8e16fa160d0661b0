"""The vision service's object events end to end: the demo video as the camera, the real model, a real mosquitto.

The first two tests run the real app on a real uvicorn server in this process (sharing the session's detector);
the third runs the service as a process, to kill it with SIGKILL. The issue asks for a 60 s broker outage; the
outage here is 6 s, which exercises the same path (the publisher is already backing off at its cap, 1 s here,
well before 6 s; a longer outage only adds more waiting events) and keeps the suite fast. bench/bench_events.py
runs the long outage.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from camera_media import write_photo_video
from korall_workloads.common.event_settings import EventsSettings
from korall_workloads.vision.app import create_app
from korall_workloads.vision.camera.settings import CaptureSettings
from korall_workloads.vision.detector import Detector
from mqtt_broker import EVENT_VALIDATOR, Mosquitto, Subscriber, first_occurrences, free_port, wait_until
from vision_helpers import ROOT, ThreadedServer, settings

EVENTS = {"object_end_after_s": 0.5, "object_update_interval_s": 0.2, "heartbeat_s": 1.0, "reconnect_min_s": 0.1}
EVENTS["reconnect_max_s"] = 1.0


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 15 fps, looped: the cat slides across for 1 s, then the motorcycle for 1 s."""
    return write_photo_video(tmp_path_factory.mktemp("events") / "photos.avi", 30, fps=15)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", timeout=5).json()


def serve(video: Path, detector: Detector, broker: Mosquitto, spool: Path) -> ThreadedServer:
    capture = CaptureSettings(source=str(video), loop=True, sample_every=2)
    events = EventsSettings(mqtt_url=broker.url, spool_dir=spool, source_namespace="yard", source_name="cam", **EVENTS)
    return ThreadedServer(create_app(settings(), detector=detector, capture=capture, events_settings=events))


def test_objects_in_the_video_become_new_update_end_events_on_the_broker(
    video: Path, detector: Detector, broker: Mosquitto, tmp_path: Path
) -> None:
    with Subscriber(broker, ["korall/yard/cam/#"]) as sub:
        with serve(video, detector, broker, tmp_path / "spool") as server:
            ends = wait_until(
                lambda: (
                    {e["data"]["label"] for e in sub.events() if e["type"] == "object.end"} >= {"cat", "motorcycle"}
                ),
                20,
                "the cat and the motorcycle to come and go",
            )
            assert ends
            body = health(server.url)["events"]
            assert (
                body["state"] == "connected"
                and body["published"] >= 4
                and body["topics"]["events"] == "korall/yard/cam/events"
            )
            metrics = httpx.get(f"{server.url}/metrics").text
            assert "korall_events_published_total" in metrics and "korall_events_spool_depth" in metrics
        events = sub.events()
    for event in events:
        EVENT_VALIDATOR.validate(event)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {e["model"]["sha256"] for e in events} == {detector.model.sha256 if detector.model else None}
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_id.setdefault(event["id"], []).append(event)
    for story in by_id.values():
        kinds = [e["type"] for e in story]
        assert kinds[0] == "object.new" and set(kinds[1:-1]) <= {"object.update"}, kinds
        assert len({e["data"]["label"] for e in story}) == 1
        assert len({e["start_time"] for e in story}) == 1
    finished = [story for story in by_id.values() if story[-1]["type"] == "object.end"]
    labels = {story[0]["data"]["label"] for story in finished}
    assert {"cat", "motorcycle"} <= labels
    for story in finished:
        end = story[-1]
        assert end["data"]["best"]["score"] >= 0.6 and end["end_time"] >= end["start_time"]
    reasons = {story[-1]["data"]["end_reason"] for story in finished}
    assert "absent" in reasons and "shutdown" in reasons  # what was in view at shutdown was closed too
    assert sub.on("/availability")[-1].payload == b"offline"


def test_a_broker_outage_while_the_camera_runs_loses_nothing_and_keeps_the_order(
    video: Path, detector: Detector, broker: Mosquitto, tmp_path: Path
) -> None:
    with (
        Subscriber(broker, ["korall/yard/cam/events"]) as sub,
        serve(video, detector, broker, tmp_path / "spool") as server,
    ):
        wait_until(lambda: len(sub.events()) >= 2, 20, "the first events")
        broker.stop()
        stopped = time.monotonic()
        during = wait_until(
            lambda: (e := health(server.url)["events"])["spool"]["depth"] >= 3 and e, 20, "events waiting"
        )
        assert during["state"] in ("unreachable", "disconnected") and "retrying in" in during["reason"]
        assert not during["connected"]
        time.sleep(max(0.0, 6.0 - (time.monotonic() - stopped)))
        during = health(server.url)["events"]
        assert during["spool"]["oldest_unsent_age_s"] > 3 and during["spool"]["depth"] >= 3
        broker.start()

        def caught_up() -> bool:
            status = health(server.url)["events"]
            return status["spool"]["depth"] == 0 and len(set(first_occurrences(sub.events()))) >= status["last_seq"]

        wait_until(caught_up, 20, "the spool to drain")
        after = health(server.url)["events"]
        last = after["last_seq"]
        assert after["state"] == "connected" and after["evicted"] == {"max_events": 0, "max_bytes": 0, "max_age": 0}
    seqs = first_occurrences(sub.events())
    assert seqs[:last] == list(range(1, last + 1))  # every one, in order, no gap


def test_sigkill_with_unacknowledged_events_loses_none_of_them(video: Path, broker: Mosquitto, tmp_path: Path) -> None:
    """The broker is frozen (SIGSTOP): events go out and no acknowledgement comes back. The service is killed with
    SIGKILL, the broker resumes, the service starts again on the same spool: every event arrives (duplicates allowed:
    the broker may have taken some of them before the kill), the numbering goes on."""
    spool = tmp_path / "spool"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PORT": str(port),
        "ACCELERATOR": "cpu",
        "NUM_THREADS": "1",
        "CAPTURE_SOURCE": str(video),
        "CAPTURE_LOOP": "true",
        "CAPTURE_SAMPLE_EVERY": "2",
        "EVENTS_MQTT_URL": broker.url,
        "EVENTS_SPOOL_DIR": str(spool),
        "EVENTS_SOURCE_NAMESPACE": "yard",
        "EVENTS_SOURCE_NAME": "cam",
        "EVENTS_OBJECT_END_AFTER_S": "0.5",
        "EVENTS_RECONNECT_MIN_S": "0.1",
        "EVENTS_RECONNECT_MAX_S": "1",
        "EVENTS_KEEPALIVE_S": "60",
        "MODELS_DIR": str(ROOT / "models"),
    }

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "korall_workloads.vision"], env=env, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(url), 60, "the vision service")
        return proc

    with Subscriber(broker, ["korall/yard/cam/#"]) as sub:
        first = start()
        try:
            wait_until(lambda: len(sub.events()) >= 2, 30, "the first events")
            broker.pause()
            status = wait_until(lambda: _unacked(url, 3), 20, "unacknowledged events")
            first.kill()
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        broker.resume()
        before = status["last_seq"]
        with sqlite3.connect(spool / "outbox.sqlite3") as db:  # they outlived the process, on disk
            on_disk = [row[0] for row in db.execute("SELECT seq FROM outbox ORDER BY id")]
        assert len(on_disk) >= 3 and on_disk == list(range(on_disk[0], on_disk[-1] + 1)) and on_disk[-1] >= before
        second = start()
        try:
            wait_until(lambda: health(url)["events"]["last_seq"] > before + 2, 30, "new events after the restart")

            def caught_up() -> bool:
                status = health(url)["events"]
                return status["spool"]["depth"] == 0 and len(set(first_occurrences(sub.events()))) >= status["last_seq"]

            wait_until(caught_up, 30, "everything delivered")
            last = health(url)["events"]["last_seq"]
        finally:
            second.terminate()
            second.wait(15)
    seqs = first_occurrences(sub.events())
    assert seqs[:last] == list(range(1, last + 1))  # none lost, in order; later ones are the new process's
    assert set(on_disk) <= set(seqs)
    print(f"killed with {len(on_disk)} unacknowledged; {len(sub.events()) - len(seqs)} duplicates arrived")
    availability = [m.payload for m in sub.on("/availability")]
    assert b"offline" in availability[1:-1] and availability[-1] == b"offline"  # the last will, then a clean stop


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _unacked(url: str, at_least: int) -> dict[str, Any] | None:
    status = health(url)["events"]
    return status if status["spool"]["depth"] >= at_least and status["connected"] else None
