"""From a CaptureProfile's `events` to messages on a real broker: the operator's own pod environment drives the
real audio service, which delivers the events of a real speech WAV to a real mosquitto with a password.

No kubelet runs here, so what it would do for the pod is done by `kubelet_env` below, and said so: the Downward API
fields (namespace, node) and the Secret key references are resolved from the values a pod would get, and the spool
volume's mount path is a folder of the test's. Everything else is the operator's builder and the workload's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from korall_contract import SPOOL_DIR_IN_POD, EventsEnv
from korall_operator.manifests import build_audio_deployment
from korall_operator.settings import OperatorSettings
from korall_operator.specs import parse_capture_profile
from korall_tools.synth import Scene
from korall_workloads.audio.app import create_app
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.common.event_settings import EventsSettings
from mqtt_broker import EVENT_VALIDATOR, Mosquitto, Subscriber, wait_until

NAMESPACE, NODE = "yard", "edge-node-1"


def kubelet_env(container: dict[str, Any], secrets: dict[str, dict[str, str]], spool: Path) -> dict[str, str]:
    """The container's environment as the kubelet would give it (this test's stand-in for the kubelet)."""
    fields = {"metadata.namespace": NAMESPACE, "spec.nodeName": NODE}
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
    assert env[EventsEnv.SPOOL_DIR] == SPOOL_DIR_IN_POD  # where the spool volume is mounted in the pod
    env[EventsEnv.SPOOL_DIR] = str(spool)
    return env


def test_a_profiles_events_reach_the_broker_under_its_namespace_and_name(
    scene_wav: tuple[Path, Scene], tmp_path: Path
) -> None:
    wav, _ = scene_wav
    with Mosquitto(tmp_path / "broker", users={"hall": "s3cret", "watcher": "w"}) as broker:
        events = {"mqtt": {"url": broker.url, "credentialsSecret": "broker-login", "topicPrefix": "site-7"}}
        profile = parse_capture_profile({"type": "audio", "device": str(wav), "audio": {}, "events": events})
        deployment = build_audio_deployment("hall-mic", NAMESPACE, profile, OperatorSettings())
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        secrets = {"broker-login": {"username": "hall", "password": "s3cret"}}
        env = kubelet_env(container, secrets, tmp_path / "spool")

        audio = AudioSettings(**{**env, "AUDIO_REALTIME": "false"})  # unpaced: the scene in well under a second
        delivery = EventsSettings(**env)
        assert (delivery.source_namespace, delivery.source_name, delivery.source_node) == (NAMESPACE, "hall-mic", NODE)
        with Subscriber(broker, [f"site-7/{NAMESPACE}/hall-mic/#"], login=("watcher", "w")) as sub:
            with TestClient(create_app(audio, events_settings=delivery)) as client:
                wait_until(lambda: client.get("/health").json()["capture"]["state"] == "finished", 30, "the WAV")
                local = client.get("/events").json()["events"]
                wait_until(lambda: len(sub.events()) == len(local), 10, "every event on the broker")
            received = sub.events()
    assert {e["type"] for e in received} >= {"audio.speech", "audio.loud_noise"}
    assert [e["seq"] for e in received] == list(range(1, len(local) + 1))
    for event in received:
        EVENT_VALIDATOR.validate(event)
        assert event["source"]["namespace"] == NAMESPACE and event["source"]["name"] == "hall-mic"
        assert event["source"]["node"] == NODE
