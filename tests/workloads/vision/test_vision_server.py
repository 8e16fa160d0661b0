"""Through a real uvicorn server on a loopback port: concurrency, liveness under load, timeouts, streaming limits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from korall_workloads.vision.app import create_app
from korall_workloads.vision.detector import Detector
from korall_workloads.vision.preprocess import prepare_image
from PIL import Image
from vision_helpers import PHOTOS, ThreadedServer, encode, photo_rgb, settings

UPLOAD_LIMIT = 2 * 1024 * 1024  # the slow PNG below fits, a few MiB do not
DECODE_BUDGET = 256 * 1024 * 1024  # the slow PNG's decode (~170 MiB) is allowed here: its time is what is tested


@pytest.fixture(scope="module")
def server(detector: Detector) -> Iterator[ThreadedServer]:
    app = create_app(settings(max_upload_bytes=UPLOAD_LIMIT, decode_budget_bytes=DECODE_BUDGET), detector=detector)
    with ThreadedServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_png() -> bytes:
    """A 6000x6600 PNG (39.6 MP, just under the 40 MP default) that compresses to under 1 MB: slow to decode."""
    x = (np.arange(6000) // 7).astype(np.uint16)
    y = (np.arange(6600) // 5).astype(np.uint16)
    plane = ((y[:, None] + x[None, :]) % 256).astype(np.uint8)
    return encode(Image.fromarray(np.dstack([plane, plane[::-1], plane[:, ::-1]])), "PNG", compress_level=1)


async def test_50_concurrent_requests_all_succeed_with_identical_results(
    server: ThreadedServer, jpegs: dict[str, bytes]
) -> None:
    names = [name for _ in range(13) for name in sorted(PHOTOS)][:50]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        replies = await asyncio.gather(
            *(client.post("/infer", content=jpegs[n], headers={"content-type": "image/jpeg"}) for n in names)
        )
    assert [r.status_code for r in replies] == [200] * 50
    by_photo: dict[str, list[object]] = {}
    for name, r in zip(names, replies, strict=True):
        by_photo.setdefault(name, []).append(r.json()["detections"])
    for name, results in by_photo.items():
        assert all(res == results[0] for res in results), name
        assert results[0][0]["label"] == PHOTOS[name][0]  # type: ignore[index]
    assert max(r.json()["timings_ms"]["queue"] for r in replies) > 0  # they really queued for the interpreter


async def test_health_answers_during_a_long_inference(
    server: ThreadedServer, slow_png: bytes, jpegs: dict[str, bytes]
) -> None:
    """A 40 MP PNG keeps a decode thread busy for a few hundred ms and 20 photos queue for the interpreter;
    /health must answer while they are all still in flight (ordering, not a time threshold)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        done: dict[str, float] = {}

        async def infer(tag: str, data: bytes) -> httpx.Response:
            r = await client.post("/infer", content=data)
            done[tag] = time.perf_counter()
            return r

        tasks = [asyncio.create_task(infer("slow", slow_png))]
        tasks += [asyncio.create_task(infer(f"p{i}", jpegs["coffee"])) for i in range(20)]
        await asyncio.sleep(0.05)  # let the uploads reach the server
        health = await client.get("/health")
        health_at = time.perf_counter()
        replies = await asyncio.gather(*tasks)
    assert health.status_code == 200 and health.json()["model"]["state"] == "ready"
    assert [r.status_code for r in replies] == [200] * 21
    assert health_at < done["slow"], "health waited for the long inference"
    assert replies[0].json()["image"] == {"width": 6000, "height": 6600, "format": "PNG", "bytes": len(slow_png)}


async def test_timeout_gives_504_and_the_next_request_is_served(
    detector: Detector, slow_png: bytes, jpegs: dict[str, bytes]
) -> None:
    """The deadline is set between a normal photo (tens of ms) and the slow PNG, measured here on this machine."""
    runs = []
    for _ in range(2):  # the faster of two runs: the first pays for page faults the server will not pay again
        started = time.perf_counter()
        prepare_image(slow_png, (300, 300), 40_000_000)
        runs.append(time.perf_counter() - started)
    slow_s = min(runs)
    timeout = max(slow_s * 0.4, 0.08)
    app = create_app(
        settings(max_upload_bytes=4 * 1024 * 1024, infer_timeout_s=timeout, decode_budget_bytes=DECODE_BUDGET),
        detector=detector,
    )
    with ThreadedServer(app) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            r = await client.post("/infer", content=slow_png)
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", (r.text, slow_s, timeout)
            assert (await client.get("/health")).json()["model"]["state"] == "ready"
            await asyncio.sleep(slow_s)  # the abandoned decode finishes in the background meanwhile
            ok = await client.post("/infer", content=jpegs["chelsea"])
            assert ok.status_code == 200, (ok.text, slow_s, timeout)
            assert ok.json()["detections"][0]["label"] == "cat"


def _raw_request(port: int, head: bytes, body_chunks: list[bytes], pause: float = 0.0) -> tuple[bytes, int]:
    """Send a request by hand; return the reply and how many body chunks were sent before it arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        sock.setblocking(False)
        reply = b""
        for chunk in body_chunks:
            with contextlib.suppress(BlockingIOError):
                reply += sock.recv(65536)
            if reply:
                break
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(pause)
        sock.setblocking(True)
        sock.settimeout(10)
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        head_end = reply.index(b"\r\n\r\n")
        headers = reply[:head_end].lower().split(b"\r\n")
        length = int(next(line.split(b":")[1] for line in headers if line.startswith(b"content-length")))
        while len(reply) < head_end + 4 + length:
            reply += sock.recv(65536)
        return reply, sent


def test_oversized_content_length_is_refused_before_the_body_is_sent(server: ThreadedServer) -> None:
    head = (
        f"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {100 * UPLOAD_LIMIT}\r\n\r\n"
    ).encode()
    reply, _ = _raw_request(server.port, head, [])
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"code":"payload_too_large"' in reply


def test_chunked_upload_is_cut_off_while_it_streams(server: ThreadedServer) -> None:
    head = b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = 128 * 1024
    chunks = [f"{piece:x}\r\n".encode() + b"\x00" * piece + b"\r\n" for _ in range(64)]  # 8 MiB offered
    reply, sent = _raw_request(server.port, head, chunks, pause=0.01)
    assert reply.startswith(b"HTTP/1.1 413")
    assert sent < len(chunks), "the server read the whole body before refusing it"
    assert sent * piece < 4 * UPLOAD_LIMIT


async def test_camera_threads_and_http_requests_share_the_detector(
    server: ThreadedServer, detector: Detector, jpegs: dict[str, bytes]
) -> None:
    """Three camera-style threads call Detector.detect while 20 /infer requests run: every result is right."""
    frame = photo_rgb("motorcycle_left")
    expected = detector.detect(frame).detections
    results: list[object] = []
    errors: list[BaseException] = []

    def camera_loop() -> None:
        try:
            for _ in range(8):
                results.append(detector.detect(frame).detections)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=camera_loop) for _ in range(3)]
    for t in threads:
        t.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        replies = await asyncio.gather(*(client.post("/infer", content=jpegs["chelsea"]) for _ in range(20)))
    for t in threads:
        await asyncio.to_thread(t.join, 60)
    assert not errors
    assert len(results) == 24 and all(r == expected for r in results)
    assert {r.status_code for r in replies} == {200}
    assert len({r.content.split(b'"timings_ms"')[0] for r in replies}) == 1
