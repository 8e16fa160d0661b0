"""The guarded HTTP server (common/server.py) with `Upgrade` requests and clients that half-close, on a small
Starlette app served by the production server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

from guarded_server import GuardedServer, connect, json_error
from korall_workloads.common.http_settings import HttpSettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

HTTP = HttpSettings(rate_limit_per_client="", rate_limit_per_token="")
UPGRADE = b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"method": request.method, "body": (await request.body()).decode("latin-1")})


async def slow(_: Request) -> JSONResponse:
    await asyncio.sleep(0.5)
    return JSONResponse({"slow": True})


APP = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/slow", slow)])


def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends within `seconds`, and whether it closed the connection meanwhile."""
    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _bodies(data: bytes) -> list[bytes]:
    return [reply.partition(b"\r\n\r\n")[2] for reply in data.split(b"HTTP/1.1 ")[1:]]


def test_the_body_of_an_upgrade_request_is_its_body_never_a_request_of_its_own() -> None:
    """curl --http2 (and Java's clients) offer `Upgrade: h2c`. httptools hands what follows such a head over as the
    new protocol: the route got an empty body, and a body that arrived later was parsed and run as a request of
    its own (request smuggling). The body is the request's, in one write or two, and what follows it is the next
    request."""
    smuggled = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"Content-Length: %d\r\n\r\n" % len(smuggled)
    with GuardedServer(APP, HTTP) as server:
        for split in (True, False):
            sock = connect(server.port)
            if split:
                sock.sendall(head)
                time.sleep(0.2)
                sock.sendall(smuggled)
            else:
                sock.sendall(head + smuggled)
            data, _ = _read_until_closed(sock, 1.0)
            assert _bodies(data) == [b'{"method":"POST","body":"GET /echo HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"}'], data
            # The connection goes on as HTTP/1.1: a request pipelined behind the body is answered.
            sock.sendall(head + smuggled + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            data, _ = _read_until_closed(sock, 1.0)
            assert [json.loads(b)["method"] for b in _bodies(data)] == ["POST", "GET"], data
            sock.close()


def test_an_upgrade_request_without_a_body_and_a_websocket_handshake_are_served_as_plain_http() -> None:
    with GuardedServer(APP, HTTP) as server:
        sock = connect(server.port)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = _read_until_closed(sock, 1.0)
        assert _bodies(data) == [b'{"method":"GET","body":""}'] * 2, data  # the second was lost in the same write
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data, _ = _read_until_closed(sock, 1.0)
        assert data.startswith(b"HTTP/1.1 200") and _bodies(data) == [b'{"method":"GET","body":""}'], data
        sock.close()


def test_an_upgrade_request_with_a_chunked_body_is_refused_in_json() -> None:
    with GuardedServer(APP, HTTP) as server:
        sock = connect(server.port)
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n"
            b"1f\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"
        )
        data, closed = _read_until_closed(sock, 3.0)
        sock.close()
    assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1 ") == 1, data
    assert "Upgrade" in json_error(_bodies(data)[0])["message"]
    assert closed


def test_a_client_that_half_closes_after_its_requests_gets_every_reply_then_the_connection_ends() -> None:
    """`nc -N`, socat and `shutdown(SHUT_WR)` end their side once the request is sent; the server closed the
    connection at that end of input, with no reply."""
    with GuardedServer(APP, HTTP) as server:
        slow_get = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        post = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        for requests in ([slow_get], [slow_get, post]):
            sock = connect(server.port)
            sock.sendall(b"".join(requests))
            sock.shutdown(socket.SHUT_WR)
            data, closed = _read_until_closed(sock, 5.0)
            sock.close()
            bodies = _bodies(data)
            assert len(bodies) == len(requests) and bodies[0] == b'{"slow":true}', data
            assert bodies[1:] in ([], [b'{"method":"POST","body":"hi"}']), data
            assert closed, "the connection should end after the last reply"


def test_a_client_that_half_closes_in_the_middle_of_a_request_is_let_go() -> None:
    with GuardedServer(APP, HTTP) as server:
        sock = connect(server.port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        data, closed = _read_until_closed(sock, 3.0)
        with contextlib.suppress(OSError):
            sock.close()
    assert closed and b'"body":"abc"' not in data, data
