"""Shared by the attack tests of both services: the production server (`common.server`) on a loopback port in a
thread, and a raw client that misbehaves on purpose (stalls, floods, never reads) from any 127.0.0.x address."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

import uvicorn
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.common.server import server_config


class GuardedServer:
    """`app` served exactly as `python -m korall_workloads.<service>` serves it, with `http`, until exit."""

    def __init__(self, app: Any, http: HttpSettings) -> None:
        self.app, self.http = app, http
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", 0, http, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="guarded-uvicorn", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GuardedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
    """A TCP connection to the server from `source` (any 127.0.0.0/8 address is this host on Linux); `rcvbuf`
    shrinks the receive buffer first, so that a client that never reads fills up fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 reply with a Content-Length: (status, lower-cased headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a reply head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def json_error(body: bytes) -> dict[str, str]:
    """The `error` object of a JSON error document (fails if the body is anything else)."""
    error: dict[str, str] = json.loads(body)["error"]
    assert set(error) == {"code", "message"}, error
    return error


def closed_by_peer(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closed the connection (EOF or reset) within `timeout`, reading and dropping what comes."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
    return False
