"""Event delivery against a real broker (Debian's mosquitto on a free loopback port), in this process.

EventDelivery is driven directly here with schema-valid audio events, so each test controls exactly what is
emitted and when the broker goes away; the services themselves are run against the broker in
tests/workloads/vision/test_camera_events.py and tests/workloads/audio/test_audio_delivery.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from korall_workloads.common.delivery import EventDelivery
from korall_workloads.common.event_payload import Event
from korall_workloads.common.event_settings import EventsSettings
from mqtt_broker import (
    EVENT_VALIDATOR,
    HEARTBEAT_VALIDATOR,
    Mosquitto,
    Subscriber,
    first_occurrences,
    free_port,
    make_tls,
    wait_until,
)
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "heartbeat_s": 1.0}


def audio_event(i: int) -> Event:
    now = time.time()
    data = {"start_s": i, "end_s": i + 0.5, "duration_s": 0.5, "peak_dbfs": -12.5, "local_id": i}
    return Event("audio.speech", now, now - 0.5, now, data)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


class Running:
    """An EventDelivery started for the test and stopped after it."""

    def __init__(self, tmp_path: Path, url: str | None, **overrides: Any) -> None:
        self.registry = CollectorRegistry()
        settings = EventsSettings(mqtt_url=url, spool_dir=tmp_path / "spool", **{**FAST, **overrides})
        self.delivery = EventDelivery(settings, "audio", self.registry)

    def __enter__(self) -> EventDelivery:
        self.delivery.start()
        return self.delivery

    def __exit__(self, *exc: object) -> None:
        self.delivery.stop(drain_s=0.5)

    def metric(self, name: str) -> float:
        value = self.registry.get_sample_value(name.split("{")[0], _labels(name))
        return float("nan") if value is None else value


def _labels(name: str) -> dict[str, str]:
    if "{" not in name:
        return {}
    inside = name.split("{", 1)[1].rstrip("}")
    return dict(part.split("=", 1) for part in inside.replace('"', "").split(","))


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_events_arrive_in_order_as_v1_documents_with_availability_and_heartbeat(
    broker: Mosquitto, tmp_path: Path, version: str
) -> None:
    running = Running(tmp_path, broker.url, mqtt_version=version, source_namespace="yard", source_name="mic-1")
    with Subscriber(broker, ["korall/yard/mic-1/#"]) as sub:
        with running as delivery:
            wait_until(lambda: delivery.status()["connected"], 10, "the connection")
            seqs = [delivery.emit(audio_event(i)) for i in range(20)]
            assert seqs == list(range(1, 21))
            wait_until(lambda: len(sub.events()) == 20, 10, "20 events")
            events = sub.events()
            assert [e["seq"] for e in events] == list(range(1, 21))
            for event in events:
                EVENT_VALIDATOR.validate(event)
            assert events[0]["source"] == {
                "namespace": "yard",
                "name": "mic-1",
                "node": events[0]["source"]["node"],
                "service": "audio",
            }
            wait_until(lambda: delivery.status()["published"] == 20, 5, "20 acknowledgements")
            status = delivery.status()
            assert (
                status["spool"]["depth"] == 0
                and status["last_seq"] == 20
                and status["spool"]["oldest_unsent_age_s"] is None
            )
            beat = wait_until(
                lambda: [m for m in sub.on("/heartbeat") if m.json()["last_seq"] == 20], 5, "a heartbeat"
            )[-1]
            HEARTBEAT_VALIDATOR.validate(beat.json())
            assert beat.json()["spool_depth"] == 0 and beat.json()["published"] == 20
        # a clean stop says offline itself (waited for while still subscribed: it may arrive a moment later)
        wait_until(lambda: [m.payload for m in sub.on("/availability")][-1:] == [b"offline"], 5, "offline")
        availability = [m.payload for m in sub.on("/availability")]
    assert running.metric("korall_events_published_total") == 20
    assert running.metric('korall_events_spooled_total{type="audio.speech"}') == 20
    assert running.metric("korall_events_last_sequence") == 20
    assert availability[0] == b"online" and availability[-1] == b"offline"
    with Subscriber(broker, ["korall/yard/mic-1/availability"], client_id="late-joiner") as late:
        message = wait_until(lambda: late.on("/availability"), 5, "the retained availability")[0]
        assert message.retain and message.payload == b"offline"


def test_without_a_broker_url_nothing_is_opened_or_registered(tmp_path: Path) -> None:
    running = Running(tmp_path, None)
    with running as delivery:
        assert delivery.emit(audio_event(1)) is None
        assert delivery.status() == {"enabled": False, "state": "disabled", "reason": "no EVENTS_MQTT_URL"}
    assert not (tmp_path / "spool").exists()
    assert b"korall_events" not in generate_latest(running.registry)


def test_the_spool_limit_evicts_the_oldest_during_an_outage_and_the_counts_add_up(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """5 delivered, the broker stops, 50 more with room for 20: 30 evicted, oldest first, counted everywhere, and the
    consumer command, which was listening the whole time, reports exactly those 30 as missing, evicted by the source.
    """
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "korall_workloads.events",
            "tail",
            "--broker",
            broker.url,
            "--session",
            "tail-test",
            "--from-seq",
            "1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Running(tmp_path, broker.url, spool_max_events=20)
    try:
        with Subscriber(broker, ["korall/+/+/events"]) as sub, running as delivery:
            wait_until(lambda: delivery.status()["connected"], 10, "the connection")
            wait_until(lambda: "tail-test" in broker.log_text(), 10, "the consumer command to connect")
            for i in range(5):
                delivery.emit(audio_event(i))
            wait_until(lambda: delivery.status()["published"] == 5, 10, "the first 5")
            broker.stop()
            wait_until(lambda: not delivery.status()["connected"], 10, "the delivery to notice")
            for i in range(5, 55):
                delivery.emit(audio_event(i))
            status = delivery.status()
            assert status["evicted"]["max_events"] == 30 and status["evicted_total"] == 30
            assert status["spool"]["depth"] == 20 and status["last_seq"] == 55
            assert running.metric('korall_events_evicted_total{reason="max_events"}') == 30
            broker.start()
            wait_until(lambda: delivery.status()["published"] == 25, 15, "the 20 kept events")
            wait_until(lambda: len(set(first_occurrences(sub.events()))) == 25, 10, "25 distinct events")
            assert first_occurrences(sub.events()) == [*range(1, 6), *range(36, 56)]
            final = delivery.status()
            assert final["published"] + final["evicted"]["max_events"] == final["last_seq"] == 55
            time.sleep(1.5)  # a heartbeat with the evicted range reaches the consumer command
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 1, err  # something is missing: the evicted events
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["seq"] for e in lines if "seq" in e] == [*range(1, 6), *range(36, 56)]
    (summary,) = lines[-1]["summary"].values()
    assert summary["received"] == 25 and summary["missing"] == 30 and summary["missing_ranges"] == [[6, 35]]
    assert summary["missing_evicted_by_source"] == 30 and summary["source_last_seq"] == 55


def test_the_age_limit_evicts_unsent_events_while_the_broker_is_away(tmp_path: Path) -> None:
    running = Running(tmp_path, f"mqtt://127.0.0.1:{free_port()}", spool_max_age_s=1.0)
    with running as delivery:
        for i in range(3):
            delivery.emit(audio_event(i))
        assert delivery.status()["spool"]["depth"] == 3
        wait_until(lambda: delivery.status()["evicted"]["max_age"] == 3, 5, "the age limit")
        assert delivery.status()["spool"]["depth"] == 0
    assert running.metric('korall_events_evicted_total{reason="max_age"}') == 3


@pytest.mark.parametrize(
    ("url", "state", "reason"),
    [
        ("mqtt://no-such-broker.invalid:1883", "unreachable", "cannot connect to mqtt://no-such-broker.invalid:1883"),
        ("mqtt://127.0.0.1:{closed}", "unreachable", "connection refused"),
    ],
)
def test_a_broker_that_cannot_be_reached_is_a_clear_state_and_events_wait(
    tmp_path: Path, url: str, state: str, reason: str
) -> None:
    running = Running(tmp_path, url.format(closed=free_port()))
    with running as delivery:
        status = wait_until(lambda: (s := delivery.status())["state"] == state and s, 10, state)
        assert reason in status["reason"] and "retrying in" in status["reason"] and not status["connected"]
        assert [delivery.emit(audio_event(i)) for i in range(3)] == [1, 2, 3]
        assert delivery.status()["spool"]["depth"] == 3
        assert running.metric("korall_events_broker_connected") == 0
        assert running.metric(f'korall_events_delivery_state{{korall_events_delivery_state="{state}"}}') == 1


def test_refused_credentials_are_reported_and_the_right_ones_deliver_what_waited(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", users={"korall": "s3cret"}) as broker:
        wrong = Running(tmp_path, broker.url, mqtt_username="korall", mqtt_password="guess")
        with wrong as delivery:
            status = wait_until(lambda: (s := delivery.status())["state"] == "refused" and s, 10, "the refusal")
            # mosquitto 2.0 answers a wrong password "Not authorized"; other brokers "Bad user name or password"
            assert re.search("refused the connection: (Not authorized|Bad user name or password)", status["reason"])
            assert [delivery.emit(audio_event(i)) for i in range(4)] == [1, 2, 3, 4]
            assert delivery.status()["spool"]["depth"] == 4
        right = Running(tmp_path, broker.url, mqtt_username="korall", mqtt_password="s3cret")  # same spool
        with right as delivery:
            wait_until(lambda: delivery.status()["published"] == 4, 10, "the waiting events")
            assert delivery.emit(audio_event(5)) == 5  # the numbering went on across the restart


def test_a_broker_that_refuses_an_event_keeps_it_spooled_and_says_so(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite korall/+/+/availability\ntopic readwrite korall/+/+/heartbeat\n")
    with (
        Mosquitto(tmp_path / "broker", extra_config=f"acl_file {acl}\n") as broker,
        Running(tmp_path, broker.url) as delivery,
    ):
        delivery.emit(audio_event(1))
        status = wait_until(lambda: (s := delivery.status())["state"] == "rejected" and s, 10, "the refusal")
        assert "Not authorized" in status["reason"] and status["spool"]["depth"] == 1 and status["published"] == 0


def test_tls_with_the_brokers_ca_delivers_and_a_foreign_ca_is_a_tls_error(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    foreign = make_tls(tmp_path / "foreign")
    tls_port = free_port()
    listener = f"listener {tls_port} 127.0.0.1\ncafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
    with (
        Mosquitto(tmp_path / "broker", extra_config=listener) as broker,
        Subscriber(broker, ["korall/+/+/events"]) as sub,
    ):
        url = f"mqtts://localhost:{tls_port}"
        with Running(tmp_path / "good", url, mqtt_tls_ca_file=tls.ca) as delivery:
            delivery.emit(audio_event(1))
            wait_until(lambda: len(sub.events()) == 1, 10, "the event over TLS")
        with Running(tmp_path / "bad", url, mqtt_tls_ca_file=foreign.ca) as delivery:
            status = wait_until(lambda: (s := delivery.status())["state"] == "tls_error" and s, 10, "the TLS failure")
            assert "certificate verify failed" in status["reason"]


def test_a_spool_that_cannot_be_opened_leaves_the_service_running_and_counts_every_event_lost(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where the spool folder should be")
    running = Running(tmp_path, f"mqtt://127.0.0.1:{free_port()}")
    with running as delivery:
        assert delivery.emit(audio_event(1)) is None and delivery.emit(audio_event(2)) is None
        status = delivery.status()
        assert status["state"] == "spool_error" and "cannot open the spool" in status["reason"]
        assert status["lost"] == 2
    assert running.metric("korall_events_lost_total") == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EVENTS_MQTT_URL": "http://broker:1883"}, "EVENTS_MQTT_URL='http://broker:1883': scheme must be mqtt://"),
        ({"EVENTS_MQTT_URL": "mqtt://user:pw@broker"}, "no credentials in the URL"),
        ({"EVENTS_MQTT_URL": "mqtt://broker:99999"}, "port must be a number"),
        ({"EVENTS_MQTT_URL": "mqtt://broker:0"}, "port must be a number from 1 to 65535"),  # was 1883, silently
        ({"EVENTS_TOPIC_PREFIX": "korall//x"}, "EVENTS_TOPIC_PREFIX='korall//x': each level of the topic prefix"),
        ({"EVENTS_QOS": "0"}, "EVENTS_QOS"),
        ({"EVENTS_TOPIC_PREFIX": "korall/#"}, "EVENTS_TOPIC_PREFIX"),
        ({"EVENTS_SOURCE_NAME": "a/b"}, "EVENTS_SOURCE_NAME='a/b'"),
        ({"EVENTS_RECONNECT_MIN_S": "5", "EVENTS_RECONNECT_MAX_S": "1"}, "must be >="),
        ({"EVENTS_MQTT_PASSWORD": "x"}, "without EVENTS_MQTT_USERNAME"),
    ],
)
def test_a_malformed_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    from korall_workloads.common.settings import describe_validation_error

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        EventsSettings()
    assert expected in describe_validation_error(caught.value, EventsSettings)


def test_the_service_stops_at_start_on_a_malformed_broker_url(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "EVENTS_MQTT_URL": "tcp://broker", "AUDIO_SOURCE": str(tmp_path / "x.wav")}
    proc = subprocess.run(
        [sys.executable, "-m", "korall_workloads.audio"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "korall audio: invalid configuration: EVENTS_MQTT_URL='tcp://broker': scheme must be mqtt:// or mqtts:// "
        "(TLS), got 'tcp'"
    ]


def test_every_setting_is_read_from_a_contract_name_and_every_contract_name_is_read() -> None:
    from korall_contract import EventsEnv, env_names

    aliases = {field.validation_alias for field in EventsSettings.model_fields.values()}
    assert aliases == env_names(EventsEnv)
