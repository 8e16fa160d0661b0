"""A real MQTT broker for the event tests and the bench: Debian's mosquitto on a free loopback port.

`Mosquitto` writes a config (optionally with a password file and persistence), starts the broker, and can stop,
restart, pause (SIGSTOP: the connection stays up but nothing is acknowledged) and resume it. `Subscriber` is a
test-side paho client with a persistent session (so nothing the broker holds for it is missed across its own
reconnects) that records every message with its arrival time.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class Mosquitto:
    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        persistence: bool = True,
        extra_config: str = "",
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.log = self.dir / "mosquitto.log"
        lines = [
            f"user {getpass.getuser()}",  # as root, mosquitto would drop to user mosquitto and lose its files here
            f"listener {self.port} 127.0.0.1",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 0",  # a persistent subscriber that was away gets everything it missed
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        if users:
            passwd = self.dir / "passwd"
            passwd.write_text("")
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True)
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n" + extra_config)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_until(self._accepts, 10, f"mosquitto on port {self.port}")
        return self

    def _accepts(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err} {self.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file (retained messages, queued messages) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() on arrival

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes with QoS 1 and a persistent session (fixed client id, clean_session false)."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: list[str],
        client_id: str = "korall-test-subscriber",
        login: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._topics = topics
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.broker = broker
        self.subscribed = threading.Event()

    def __enter__(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.broker.port, keepalive=5)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, "the subscriber's SUBACK")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain), time.time()))

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def events(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.on("/events")]


# -- checking what arrived ---------------------------------------------------------------------------------------

SCHEMAS = Path(__file__).resolve().parents[2] / "workloads" / "korall_workloads" / "common"


def _validators() -> tuple[Any, Any]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    event = json.loads((SCHEMAS / "event.schema.json").read_text())
    heartbeat = json.loads((SCHEMAS / "heartbeat.schema.json").read_text())
    registry = Registry().with_resource(event["$id"], Resource.from_contents(event))
    Draft202012Validator.check_schema(event)
    Draft202012Validator.check_schema(heartbeat)
    return Draft202012Validator(event, registry=registry), Draft202012Validator(heartbeat, registry=registry)


EVENT_VALIDATOR, HEARTBEAT_VALIDATOR = _validators()


def first_occurrences(events: list[dict[str, Any]]) -> list[int]:
    """The sequence numbers in arrival order, each at its first arrival (duplicates dropped, as a consumer does)."""
    seen: set[int] = set()
    out = []
    for event in events:
        if event["seq"] not in seen:
            seen.add(event["seq"])
            out.append(event["seq"])
    return out


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(workdir: Path, host: str = "localhost") -> TlsFiles:
    """A throw-away CA and a server certificate for `host` (and 127.0.0.1), made with the openssl command."""
    workdir.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=korall test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", "server.key", "-out", "server.csr")
    (workdir / "san.cnf").write_text(f"subjectAltName=DNS:{host},IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.cnf", "-out", "server.crt")  # fmt: skip
    return TlsFiles(workdir / "ca.crt", workdir / "server.crt", workdir / "server.key")
