"""Issue 15's attacks on the vision service, each against the production server (`common.server`) on a loopback
port: the service must refuse with a 4xx/503 JSON error, stay healthy, and hold no more memory or time than its
limits allow. Every test is bounded: small timeouts set here, a few connections, payloads of a few MB at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from guarded_server import GuardedServer, closed_by_peer, connect, json_error, read_reply
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.vision.app import create_app
from korall_workloads.vision.detector import Detector
from PIL import Image
from vision_helpers import settings, with_extra_scans

MIB = 1024 * 1024
HTTP = HttpSettings(
    header_timeout_s=1.0,
    body_timeout_s=1.0,
    max_connections=12,
    max_header_bytes=16 * 1024,
    rate_limit_per_client="",
    rate_limit_per_token="",
)


@pytest.fixture(scope="module")
def server(detector: Detector) -> Iterator[GuardedServer]:
    app = create_app(settings(infer_queue_max=8), detector=detector, http=HTTP)
    with GuardedServer(app, HTTP) as srv:
        yield srv


@pytest.fixture(scope="module")
def roomy_server(detector: Detector) -> Iterator[GuardedServer]:
    """The same, with the default read timeouts, for tests that upload large bodies at once: their client runs in
    this process beside the server and the decodes, and on a loaded machine may take longer than `HTTP`'s 1 s to
    send a body (a 408 that says nothing of the server)."""
    http = HTTP.model_copy(update=HttpSettings().model_dump(include={"header_timeout_s", "body_timeout_s"}))
    with GuardedServer(create_app(settings(infer_queue_max=8), detector=detector, http=http), http) as srv:
        yield srv


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _peak_rss_growth(action: object) -> int:
    """Bytes the process's peak RSS grew by while `action()` ran (the server runs in this process)."""

    def status(key: str) -> int:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
        return int(line.split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # peak := current
    before = status("VmRSS:")
    action()  # type: ignore[operator]
    return status("VmHWM:") - before


def _healthy(srv: GuardedServer) -> None:
    r = httpx.get(srv.url + "/health", timeout=5)
    assert r.status_code == 200 and r.json()["model"]["state"] == "ready"


# -- memory: decompression bombs refused from the header -----------------------------------------------------------


def test_a_1_kb_lossless_webp_of_40_megapixels_is_refused_before_it_is_decoded(server: GuardedServer) -> None:
    """The issue's bomb: +687 MB in one request before. Its decode would take ~650 MiB (decode_cost): refused
    from the WebP header, before Pillow even opens it (which allocates the canvas)."""
    bomb = _encode(Image.new("RGB", (8000, 5000), (120, 30, 200)), "WEBP", lossless=True)
    assert len(bomb) < 4096
    replies: list[httpx.Response] = []
    grown = _peak_rss_growth(lambda: replies.append(httpx.post(server.url + "/infer", content=bomb, timeout=30)))
    assert replies[0].status_code == 413
    error = json_error(replies[0].content)
    assert error["code"] == "image_too_large" and "DECODE_BUDGET_BYTES" in error["message"], error
    assert grown < 32 * MIB, f"the refused bomb still cost {grown / MIB:.0f} MiB"
    _healthy(server)


def test_a_24_megapixel_rgba_png_is_refused_and_a_large_one_within_budget_is_served(
    roomy_server: GuardedServer,
) -> None:
    server = roomy_server
    rgba = _encode(Image.new("RGBA", (6000, 4000), (1, 2, 3, 4)), "PNG", compress_level=1)
    r = httpx.post(server.url + "/infer", content=rgba, timeout=30)
    assert r.status_code == 413 and json_error(r.content)["code"] == "image_too_large"
    assert "6000x4000 PNG (RGBA)" in json_error(r.content)["message"]
    # 6 MP RGB: ~33 MiB to decode, over DECODE_SERIAL_BYTES: decoded on the large-decode thread, one at a time.
    rgb = _encode(Image.new("RGB", (3000, 2000), (90, 140, 60)), "PNG", compress_level=1)
    grown: list[int] = []

    async def four_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/infer", content=rgb) for _ in range(4)))

    replies: list[httpx.Response] = []
    grown.append(_peak_rss_growth(lambda: replies.extend(asyncio.run(four_at_once()))))
    assert [r.status_code for r in replies] == [200] * 4
    assert all(
        r.json()["image"] == {"width": 3000, "height": 2000, "format": "PNG", "bytes": len(rgb)} for r in replies
    )
    # one at a time: far less than four decodes side by side (4 x 24 MB of Pillow RGB at least)
    assert grown[0] < 80 * MIB, f"four large decodes grew the peak by {grown[0] / MIB:.0f} MiB"


def test_jpegs_of_40_000_scans_are_refused_at_once_and_photos_are_served_beside_them(
    roomy_server: GuardedServer, jpegs: dict[str, bytes]
) -> None:
    """Three 0.5 MB progressive JPEGs of 40 000 scans each held every decode worker for about 20 s (past the
    inference timeout: photos beside them got 504). Refused from a count of their scans, before any decode."""
    server = roomy_server
    grey = _encode(Image.new("L", (1448, 1448), 128), "JPEG", progressive=True, quality=50)
    bomb = with_extra_scans(grey, 40_000)
    assert len(bomb) < MIB

    async def bombs_and_a_photo() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            sent = [client.post("/infer", content=bomb) for _ in range(3)]
            return await asyncio.gather(*sent, client.post("/infer", content=jpegs["chelsea"]))

    started = time.monotonic()
    *refused, photo = asyncio.run(bombs_and_a_photo())
    assert [r.status_code for r in refused] == [413] * 3 and photo.status_code == 200, photo.text
    assert all("scans" in json_error(r.content)["message"] for r in refused)
    assert time.monotonic() - started < 5
    _healthy(server)


def test_head_of_the_probes_and_the_page_answers_as_get_does_without_a_body(server: GuardedServer) -> None:
    """RFC 9110: a server that answers GET answers HEAD (curl -I, uptime checkers); they were 405."""
    with httpx.Client(base_url=server.url, timeout=10) as client:  # one keep-alive connection throughout
        for path in ("/health", "/ready", "/"):
            head, get = client.head(path), client.get(path)
            assert head.status_code == get.status_code == 200 and head.content == b"", path
            assert head.headers["content-type"] == get.headers["content-type"], path
        assert client.head("/models").status_code == 405  # only where a GET costs nothing and streams nothing


# -- time: stalled and slow clients ---------------------------------------------------------------------------------


def test_stalled_uploads_get_408_and_release_what_they_held(server: GuardedServer) -> None:
    """The issue: each upload that stops sending pinned up to 20 MiB for ever. Now the body has HTTP_BODY_TIMEOUT_S
    (1 s here): each stalled upload gets a JSON 408 and its connection closed; the admission is back to zero."""
    app_state = server.server.config.loaded_app
    socks = []
    for _ in range(6):
        sock = connect(server.port)
        sock.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000000\r\n\r\n")
        sock.sendall(b"\xff\xd8" + b"\x00" * 30000)  # a start, then nothing
        socks.append(sock)
    started = time.monotonic()
    _healthy(server)  # answers at once meanwhile
    for sock in socks:
        status, headers, body = read_reply(sock)
        assert status == 408 and headers["connection"] == "close"
        assert json_error(body)["code"] == "request_timeout"
        assert closed_by_peer(sock)
        sock.close()
    assert time.monotonic() - started < 5
    admission = _admission(app_state)
    assert (admission.in_flight, admission.reserved) == (0, 0)


def _admission(app: object) -> object:
    while not hasattr(getattr(app, "state", None), "admission"):
        app = app.app  # type: ignore[attr-defined]  # through the middleware stack to the FastAPI app
    return app.state.admission  # type: ignore[attr-defined]


def test_a_connection_that_sends_nothing_or_half_a_head_is_closed_with_408(server: GuardedServer) -> None:
    silent = connect(server.port)
    half = connect(server.port)
    half.sendall(b"GET /hea")
    for sock in (silent, half):
        status, _, body = read_reply(sock)
        assert status == 408 and json_error(body)["code"] == "request_timeout"
        assert "HTTP_HEADER_TIMEOUT_S" in json_error(body)["message"]
        assert closed_by_peer(sock)
        sock.close()


def test_a_huge_request_head_is_cut_off_with_431_after_the_limit(server: GuardedServer) -> None:
    """The issue: a 128 MB header took 10 s to parse and stalled /health. Now the server stops parsing it past
    HTTP_MAX_HEADER_BYTES (16 KiB here) and answers 431 while the client is still sending."""
    sock = connect(server.port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: ")
    sent = 0
    sock.setblocking(False)
    reply = b""
    while sent < 128 * MIB and not reply:
        with contextlib.suppress(BlockingIOError):
            reply = sock.recv(65536)
        try:
            sent += sock.send(b"a" * 65536)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            time.sleep(0.01)
    sock.setblocking(True)
    sock.settimeout(5)
    assert reply, "no reply while sending 128 MB of header"
    # the kernel's socket buffers on both sides take a few MB before the server reads anything at all
    assert sent < 32 * MIB, f"the reply came only after {sent} bytes"
    while b"}}" not in reply:
        reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431") and json_error(body)["code"] == "header_too_large"
    sock.close()
    _healthy(server)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n", 400, "bad_request"),
        (
            b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"GET /\x01health HTTP/1.1\r\n\r\n", 400, "bad_request"),
        (b"GET /health?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "header_too_large"),
        (
            b"POST /infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
            400,
            "bad_request",
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
        (bytes.fromhex("16030100a5010000a10303") + bytes(40), 400, "bad_request"),
    ],
    ids=[
        "malformed-content-length",
        "length-and-chunked",
        "control-char-in-path",
        "70-kb-url",
        "bad-chunk-size-while-the-route-reads",
        "http2-preface",
        "tls-client-hello",
    ],
)
def test_requests_the_parser_refuses_get_json_too(
    server: GuardedServer, request_bytes: bytes, status: int, code: str
) -> None:
    """The issue: a malformed Content-Length or a URL over ~64 KB got plain text, not the JSON the docs promise."""
    sock = connect(server.port)
    sock.sendall(request_bytes)
    got, headers, body = read_reply(sock)
    assert (got, json_error(body)["code"]) == (status, code)
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    sock.close()


def test_connections_over_the_cap_are_refused_with_503_json(detector: Detector) -> None:
    http = HttpSettings(max_connections=4, header_timeout_s=30, rate_limit_per_client="", rate_limit_per_token="")
    with GuardedServer(create_app(settings(), detector=detector, http=http), http) as srv:
        held = [connect(srv.port) for _ in range(4)]
        time.sleep(0.2)  # let the server register them
        extra = connect(srv.port)
        status, headers, body = read_reply(extra)
        assert status == 503 and headers["retry-after"] == "1"
        assert json_error(body)["code"] == "too_many_connections"
        extra.close()
        held.pop().close()
        time.sleep(0.2)
        ok = connect(srv.port)
        ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(ok)[0] == 200
        for sock in [*held, ok]:
            sock.close()


# -- multipart ------------------------------------------------------------------------------------------------------


def test_a_multipart_body_of_many_thousand_parts_is_refused_at_part_17(server: GuardedServer) -> None:
    """The issue: a 19 MB body of 380k parts was parsed for 5.75 s on the event loop, /health waiting. Now the body
    is parsed on a thread and the parser stops at part 17 with a 400."""
    part = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n"
    body = part * 380_000 + b"--b--\r\n"
    assert len(body) > 19_000_000
    reply = httpx.post(
        server.url + "/infer", content=body, headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30
    )
    assert reply.status_code == 400 and "more than 16 parts" in json_error(reply.content)["message"]
    _healthy(server)


def test_a_reply_before_the_body_ends_closes_the_connection_instead_of_reading_the_rest(server: GuardedServer) -> None:
    """The 400 comes while the 19 MB of parts still stream in; the server stops reading them, half-closes, and the
    client reads the reply (no reset)."""
    part = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n"
    body = part * 380_000
    sock = connect(server.port)
    head = "POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
    sock.setblocking(False)
    sent, reply = 0, b""
    while sent < len(body) and not reply:
        with contextlib.suppress(BlockingIOError):
            reply = sock.recv(65536)
        try:
            sent += sock.send(body[sent : sent + 65536])
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            time.sleep(0.01)
    sock.setblocking(True)
    assert reply.startswith(b"HTTP/1.1 400") and sent < len(body)
    assert closed_by_peer(sock)
    sock.close()


def test_a_multipart_boundary_over_256_characters_is_a_400_not_a_500(server: GuardedServer) -> None:
    boundary = "b" * 300
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=a.jpg\r\n\r\nx\r\n--{boundary}--\r\n"
    r = httpx.post(
        server.url + "/infer",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=10,
    )
    assert r.status_code == 400 and json_error(r.content)["code"] == "bad_request"
    assert "256" in json_error(r.content)["message"]


# -- load shedding --------------------------------------------------------------------------------------------------


def _stalled_upload(port: int, declared: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(f"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode() + b"\xff\xd8")
    return sock


def test_a_full_inference_queue_sheds_with_503_and_retry_after(detector: Detector, jpegs: dict[str, bytes]) -> None:
    http = HttpSettings(body_timeout_s=5, rate_limit_per_client="", rate_limit_per_token="")
    with GuardedServer(create_app(settings(infer_queue_max=2), detector=detector, http=http), http) as srv:
        held = [_stalled_upload(srv.port, 1000) for _ in range(2)]
        time.sleep(0.2)
        r = httpx.post(srv.url + "/infer", content=jpegs["chelsea"], timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert json_error(r.content)["code"] == "overloaded" and "INFER_QUEUE_MAX" in json_error(r.content)["message"]
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert httpx.post(srv.url + "/infer", content=jpegs["chelsea"], timeout=30).status_code == 200


def test_uploads_over_the_memory_budget_are_shed_before_they_are_read(detector: Detector) -> None:
    http = HttpSettings(body_timeout_s=5, rate_limit_per_client="", rate_limit_per_token="")
    app = create_app(settings(max_upload_bytes=2 * MIB, upload_budget_bytes=3 * MIB), detector=detector, http=http)
    with GuardedServer(app, http) as srv:
        first = _stalled_upload(srv.port, 2 * MIB)
        time.sleep(0.2)
        second = _stalled_upload(srv.port, 2 * MIB)
        status, headers, body = read_reply(second)
        assert status == 503 and headers["retry-after"] == "1"
        assert "UPLOAD_BUDGET_BYTES" in json_error(body)["message"]
        first.close()
        second.close()
