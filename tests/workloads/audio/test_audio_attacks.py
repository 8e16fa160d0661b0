"""Issue 15's attacks on the audio service's live stream, against the production server on a loopback port: clients
that take every place and never read are dropped after HTTP_SEND_TIMEOUT_S, one address cannot take every place,
and the guard covers the audio routes as it does the vision ones.

Events are published into the running service's hub from the test, as its capture thread does, so that the
stream carries enough data to fill the buffers of clients that do not read (speech events come a few a minute).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from guarded_server import GuardedServer, connect, json_error, read_reply
from korall_tools.synth import Scene
from korall_workloads.audio.app import create_app
from korall_workloads.audio.events import AudioEvent
from korall_workloads.audio.hub import EventHub
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.common.http_settings import HttpSettings

HTTP = HttpSettings(send_timeout_s=1.0, streams_per_client=4, rate_limit_per_client="", rate_limit_per_token="")
STREAM_REQUEST = b"GET /events/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"


@pytest.fixture
def service(scene_wav: tuple[Path, Scene]) -> Iterator[tuple[GuardedServer, EventHub]]:
    path, _ = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=True), http=HTTP)
    with GuardedServer(app, HTTP) as srv:
        yield srv, app.state.hub


def _publish(hub: EventHub, count: int) -> None:
    for i in range(count):
        hub.publish(AudioEvent("loud_noise", i * 0.1, i * 0.1 + 0.05, -3.0))


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_32_clients_that_never_read_are_dropped_and_a_reader_gets_in(
    service: tuple[GuardedServer, EventHub],
) -> None:
    """The issue: 32 clients that connect to /events/stream and never read held every place for ever. They come
    from 8 addresses (4 each, the most one address may hold), take all 32 places, and read nothing."""
    srv, hub = service
    idle = []
    for host in range(8):
        for _ in range(4):
            sock = connect(srv.port, source=f"127.0.0.{10 + host}", rcvbuf=4096)
            sock.sendall(STREAM_REQUEST)
            idle.append(sock)
    _wait(lambda: hub.subscribers == 32, 10, f"32 idle clients subscribed, have {hub.subscribers}")
    refused = connect(srv.port, source="127.0.0.99")
    refused.sendall(STREAM_REQUEST)
    status, headers, body = read_reply(refused)
    assert status == 503 and json_error(body)["code"] == "too_many_clients" and headers["retry-after"] == "5"
    refused.close()

    # The stream carries data until their socket buffers fill (megabytes on loopback: about 13 s here, longer on a
    # loaded machine), then each write waits past HTTP_SEND_TIMEOUT_S and the server drops the client.
    deadline = time.monotonic() + 60
    while hub.subscribers and time.monotonic() < deadline:
        _publish(hub, 100)
        time.sleep(0.05)
    assert hub.subscribers == 0, f"{hub.subscribers} clients that never read still hold a place"

    with (
        httpx.Client(base_url=srv.url, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.99")) as client,
        client.stream("GET", "/events/stream") as reply,
    ):
        assert reply.status_code == 200
        _wait(lambda: hub.subscribers == 1, 5, "the reader subscribed")
        _publish(hub, 1)
        data = next(line for line in reply.iter_lines() if line.startswith("data: "))
        assert '"type":"loud_noise"' in data.replace(" ", "")
    for sock in idle:
        sock.close()


def test_one_address_holds_at_most_its_share_of_streams(service: tuple[GuardedServer, EventHub]) -> None:
    srv, hub = service
    held = []
    for _ in range(4):
        sock = connect(srv.port, source="127.0.0.20")
        sock.sendall(STREAM_REQUEST)
        held.append(sock)
    _wait(lambda: hub.subscribers == 4, 10, "four streams from one address")
    fifth = connect(srv.port, source="127.0.0.20")
    fifth.sendall(STREAM_REQUEST)
    status, _, body = read_reply(fifth)
    assert status == 503 and "max 4 per client" in json_error(body)["message"]
    other = connect(srv.port, source="127.0.0.21")
    other.sendall(STREAM_REQUEST)
    other.settimeout(5)
    assert other.recv(4096).startswith(b"HTTP/1.1 200")
    for sock in [*held, fifth, other]:
        sock.close()


def test_the_audio_routes_need_a_token_and_its_probes_do_not(scene_wav: tuple[Path, Scene], tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"dashboard sha256:{hashlib.sha256(token.encode()).hexdigest()} read\n")
    http = HttpSettings(auth_tokens_file=tokens, rate_limit_per_client="", rate_limit_per_token="")
    path, _ = scene_wav
    app = create_app(AudioSettings(source=str(path), realtime=False), http=http)
    with GuardedServer(app, http) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200  # AUTH_METRICS=false: open like /health
        for path_ in ("/events", "/chunks", "/events/stream"):
            reply = client.get(path_)
            assert reply.status_code == 401 and json_error(reply.content)["code"] == "unauthorized", path_
        assert client.get("/events", headers={"Authorization": f"Bearer {token}"}).status_code == 200
