"""The guarded HTTP server (common/server.py) with pipelined requests, on a small Starlette app with a slow route
(the services have none that takes seconds on purpose), served by the production server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from guarded_server import GuardedServer, closed_by_peer, connect, json_error
from korall_workloads.common.http_settings import HttpSettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def slow(_: Request) -> JSONResponse:
    await asyncio.sleep(1.5)
    return JSONResponse({"slow": True})


async def fast(_: Request) -> JSONResponse:
    return JSONResponse({"fast": True})


def test_a_pipelined_head_dribbled_behind_a_slow_reply_still_times_out() -> None:
    """The head timer fires while the first reply is still on its way; the dribbled second head must still be cut
    off once that reply is out (it was left to the keep-alive timer, which every byte resets: a slowloris)."""
    http = HttpSettings(header_timeout_s=0.5, rate_limit_per_client="", rate_limit_per_token="")
    app = Starlette(routes=[Route("/slow", slow), Route("/fast", fast, methods=["GET", "POST"])])
    with GuardedServer(app, http) as server:
        sock = connect(server.port)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nX-a: ")
        sock.settimeout(0.1)
        started, received, closed = time.monotonic(), b"", False
        while time.monotonic() - started < 8 and not closed:
            try:
                chunk = sock.recv(65536)
                closed = not chunk
                received += chunk
            except TimeoutError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if not closed:
                try:
                    sock.send(b"a")  # one byte of the head every 0.2 s
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                time.sleep(0.1)
        elapsed = time.monotonic() - started
        closed = closed or closed_by_peer(sock, timeout=1)
        sock.close()
    first, _, rest = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b'{"slow":true}'), received[:300]
    assert b"HTTP/1.1 408" in rest, received[:600]
    body = rest[rest.index(b"HTTP/1.1 408") :].partition(b"\r\n\r\n")[2]
    assert json_error(body)["code"] == "request_timeout"
    assert closed and elapsed < 4, elapsed


def test_a_pipelined_upload_whose_body_comes_later_is_answered_too() -> None:
    """A GET and, in the same write, the head of a POST whose body follows: the POST waits in uvicorn's pipeline
    while the GET is answered, and must then be served, not taken for a request answered before its body."""
    http = HttpSettings(rate_limit_per_client="", rate_limit_per_token="")
    app = Starlette(routes=[Route("/fast", fast, methods=["GET", "POST"])])
    with GuardedServer(app, http) as server:
        sock = connect(server.port)
        sock.sendall(
            b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nPOST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        )
        time.sleep(0.3)
        sock.sendall(b"0123456789")
        sock.settimeout(5)
        data = b""
        while data.count(b'{"fast":true}') < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.close()
    replies = data.split(b"HTTP/1.1 ")[1:]
    assert len(replies) == 2 and all(r.startswith(b"200") and r.endswith(b'{"fast":true}') for r in replies), data


def _read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_bad_pipelined_request_is_refused_after_the_replies_before_it() -> None:
    """A malformed request, one whose head is too large, or one whose chunked body breaks, pipelined behind a slow
    and a fast one: both are answered first, in order, then the refusal (JSON), then the connection ends. The
    refusal was written at once, ahead of them, and the slow request was taken for one whose client had gone."""
    http = HttpSettings(max_header_bytes=2048, rate_limit_per_client="", rate_limit_per_token="")
    app = Starlette(routes=[Route("/slow", slow), Route("/fast", fast, methods=["GET", "POST"])])
    bad = {
        "malformed": (b"NOT HTTP AT ALL\r\n\r\n", 400),
        "head": (b"GET /fast HTTP/1.1\r\nX: " + b"a" * 4096 + b"\r\n\r\n", 431),
        "chunk": (b"POST /fast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    }
    with GuardedServer(app, http) as server:
        for what, (request, status) in bad.items():
            sock = connect(server.port)
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n" + request)
            data = _read_until_closed(sock, 5)
            sock.close()
            replies = data.split(b"HTTP/1.1 ")[1:]
            assert [r[:3] for r in replies] == [b"200", b"200", str(status).encode()], (what, data[:800])
            assert replies[0].endswith(b'{"slow":true}') and replies[1].endswith(b'{"fast":true}'), (what, data)
            assert json_error(replies[2].partition(b"\r\n\r\n")[2])["message"], what


def test_after_a_deferred_refusal_what_the_client_still_sends_is_drained() -> None:
    """One request ahead of a malformed one, then 8 MB more: the lingering close after the refusal must read and
    drop them (as after any refusal), or the client's send stalls and the close resets the connection."""
    import threading

    http = HttpSettings(rate_limit_per_client="", rate_limit_per_token="")
    app = Starlette(routes=[Route("/slow", slow)])
    with GuardedServer(app, http) as server:
        sock = connect(server.port)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        sent: list[BaseException | None] = []

        def send_the_rest() -> None:
            try:
                sock.sendall(b"x" * (8 * 1024 * 1024))
                sent.append(None)
            except OSError as exc:
                sent.append(exc)

        sender = threading.Thread(target=send_the_rest)
        sender.start()
        data = _read_until_closed(sock, 8)
        sender.join(10)
        sock.close()
    replies = data.split(b"HTTP/1.1 ")[1:]
    assert [r[:3] for r in replies] == [b"200", b"400"], data[:800]
    assert sent == [None], sent
