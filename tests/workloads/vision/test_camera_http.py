"""The camera through the vision service's HTTP API: a generated video file stands in for the camera.

The app is the real one (`create_app` with a capture source) on a real uvicorn server on a loopback port,
sharing the session's real Detector between the camera loop and /infer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from camera_media import write_photo_video, write_stamped_video
from fastapi.testclient import TestClient
from korall_contract import VisionEnv
from korall_workloads.common.broadcast import Broadcaster
from korall_workloads.vision.app import create_app
from korall_workloads.vision.camera.settings import CaptureSettings
from korall_workloads.vision.detector import Detector
from service_process import stop_with_a_live_stream_open
from vision_helpers import ROOT, ThreadedServer, free_port, settings


def poll(url: str, check: Callable[[httpx.Response], bool], timeout: float, what: str) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        last = httpx.get(url, timeout=5)
        if check(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last reply {last and last.status_code}: {last and last.text}")


@pytest.fixture(scope="module")
def photo_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_video(tmp_path_factory.mktemp("cam") / "photos.avi", 30, fps=15)


@pytest.fixture(scope="module")
def camera_server(photo_video: Path, detector: Detector) -> Iterator[ThreadedServer]:
    capture = CaptureSettings(source=str(photo_video), loop=True, sample_every=2)
    with ThreadedServer(create_app(settings(), detector=detector, capture=capture)) as server:
        yield server


def test_without_a_camera_the_camera_routes_say_how_to_configure_one(client: TestClient) -> None:
    for path in ("/detections", "/detections/stream", "/snapshot.jpg", "/camera"):
        reply = client.get(path)
        assert reply.status_code == 404, path
        error = reply.json()["error"]
        assert error["code"] == "camera_not_configured" and VisionEnv.CAPTURE_SOURCE in error["message"]
    assert "camera" not in client.get("/health").json()
    assert client.get("/ready").json() == {"ready": True}


def test_a_video_file_stands_in_for_the_camera(camera_server: ThreadedServer) -> None:
    url = camera_server.url
    reply = poll(f"{url}/detections", lambda r: r.status_code == 200, 10, "a first result")
    body = reply.json()
    assert body["image"] == {"width": 640, "height": 480} and body["frame_index"] % 2 == 0
    assert abs(body["frame_ts"] - time.time()) < 5
    assert {"invoke", "frame_to_result"} <= body["timings_ms"].keys()
    labels = set()
    deadline = time.monotonic() + 6
    while labels != {"cat", "motorcycle"} and time.monotonic() < deadline:
        detections = httpx.get(f"{url}/detections").json()["detections"]
        labels |= {d["label"] for d in detections if d["score"] > 0.6}
        time.sleep(0.1)
    assert labels == {"cat", "motorcycle"}

    health = httpx.get(f"{url}/health").json()
    camera = health["camera"]
    assert camera["state"] == "streaming" and camera["sample_every"] == 2
    assert camera["negotiated"] == {
        "kind": "file",
        "backend": "FFMPEG",
        "width": 640,
        "height": 480,
        "fps": 15.0,
        "fourcc": "MJPG",
    }
    assert camera["frames_inferred"] > 0 and camera["queue_max_depth"] <= camera["buffer_frames"]
    assert httpx.get(f"{url}/ready").json() == {"ready": True, "camera": "streaming"}
    assert httpx.get(f"{url}/camera").json()["source"] == camera["source"]


def test_snapshot_is_the_latest_frame_with_its_boxes_drawn(camera_server: ThreadedServer) -> None:
    url = camera_server.url
    poll(f"{url}/detections", lambda r: r.status_code == 200 and bool(r.json()["detections"]), 10, "a detection")
    # The same frame with and without boxes: the camera moves on between two requests, so both are sent at once
    # (each on its own connection), again until they meet one frame; a loaded machine may need many tries.
    with httpx.Client(base_url=url) as one, httpx.Client(base_url=url) as two, ThreadPoolExecutor(2) as pool:
        deadline = time.monotonic() + 20
        while True:
            drawing = pool.submit(one.get, "/snapshot.jpg", params={"quality": 95})
            plain = two.get("/snapshot.jpg", params={"boxes": "false", "quality": 95})
            drawn = drawing.result()
            if drawn.headers["x-frame-index"] == plain.headers["x-frame-index"] or time.monotonic() > deadline:
                break
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/jpeg"
    assert drawn.headers["x-frame-index"] == plain.headers["x-frame-index"]
    a = cv2.imdecode(np.frombuffer(drawn.content, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR)
    assert a.shape == b.shape == (480, 640, 3)
    changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 60
    _, xs = np.nonzero(changed)
    assert len(xs) > 500  # a rectangle and a label, not JPEG noise
    assert 0 <= xs.min() < 320 and xs.max() > 320  # boxes span the sliding photo (from x=0 in its first frames)


def test_live_stream_delivers_each_result_as_a_server_sent_event(camera_server: ThreadedServer) -> None:
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{camera_server.url}/detections/stream", timeout=10) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert kind == "detections"
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 4:
                    break
    indices = [e["frame_index"] for e in events]
    assert indices == sorted(set(indices)) and all(i % 2 == 0 for i in indices)
    assert all("detections" in e and "timings_ms" in e for e in events)


def test_infer_keeps_working_beside_the_camera_loop(camera_server: ThreadedServer, jpegs: dict[str, bytes]) -> None:
    """Eight /infer requests while the camera loop uses the same interpreter: all correct."""
    url = camera_server.url
    poll(f"{url}/detections", lambda r: r.status_code == 200, 10, "the camera loop")
    before = httpx.get(f"{url}/health").json()["camera"]["frames_inferred"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            headers = {"content-type": "image/jpeg"}
            return await asyncio.gather(
                *(http.post("/infer", content=jpegs["chelsea"], headers=headers) for _ in range(8))
            )

    replies = asyncio.run(burst())
    for reply in replies:
        assert reply.status_code == 200, reply.text
        assert reply.json()["detections"][0]["label"] == "cat"
    # The camera loop goes on as well (its next sampled frame may come only after so short a burst).
    poll(f"{url}/health", lambda r: r.json()["camera"]["frames_inferred"] > before, 10, "the camera loop to go on")
    metrics = httpx.get(f"{url}/metrics").text
    for name in (
        "korall_capture_frames_total",
        "korall_capture_frames_inferred_total",
        'korall_capture_frames_dropped_total{reason="ring_full"}',
        "korall_capture_queue_depth",
        "korall_capture_frame_to_result_seconds_bucket",
        "korall_capture_reconnects_total",
        "korall_capture_fps",
        'korall_capture_state{korall_capture_state="streaming"} 1.0',
    ):
        assert name in metrics, name


def test_camera_loss_shows_in_health_and_ready_and_recovers(tmp_path: Path, detector: Detector) -> None:
    video = write_stamped_video(tmp_path / "short.avi", 10, fps=20)
    capture = CaptureSettings(source=str(video), reconnect_min_s=0.6, reconnect_max_s=0.6)
    with ThreadedServer(create_app(settings(), detector=detector, capture=capture)) as server:
        url = server.url
        poll(f"{url}/ready", lambda r: r.status_code == 200, 10, "ready")
        health = poll(
            f"{url}/health", lambda r: r.json()["camera"]["state"] == "reconnecting", 5, "the end of the video"
        ).json()
        assert "end of video file" in health["camera"]["reason"] and health["status"] == "ok"
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        assert "camera reconnecting: end of video file" in ready.json()["error"]["message"]
        poll(f"{url}/ready", lambda r: r.status_code == 200, 5, "ready again after the reconnect")
        assert httpx.get(f"{url}/health").json()["camera"]["reconnects"] >= 1


def test_a_missing_device_is_reported_not_crashed(detector: Detector) -> None:
    capture = CaptureSettings(source="/dev/video99", reconnect_min_s=0.05, reconnect_max_s=0.2)
    with TestClient(create_app(settings(), detector=detector, capture=capture)) as http:
        deadline = time.monotonic() + 5
        while http.get("/health").json()["camera"]["state"] != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.02)
        camera = http.get("/health").json()["camera"]
        assert camera["state"] == "reconnecting" and "camera device /dev/video99 does not exist" in camera["reason"]
        for path in ("/detections", "/snapshot.jpg"):
            reply = http.get(path)
            assert reply.status_code == 503
            error = reply.json()["error"]
            assert error["code"] == "camera_unavailable" and "/dev/video99 does not exist" in error["message"]
        assert http.get("/ready").status_code == 503
        reply = http.post("/infer", content=b"", headers={"content-type": "image/jpeg"})
        assert reply.status_code == 400  # the rest of the service is unaffected


def test_an_invalid_capture_setting_stops_the_service_with_one_line() -> None:
    env = {**os.environ, VisionEnv.CAPTURE_SOURCE: "/dev/video0", VisionEnv.CAPTURE_FPS: "fast"}
    done = subprocess.run(
        [sys.executable, "-m", "korall_workloads.vision"],
        env={**env, "PYTHONPATH": f"{ROOT / 'contract'}:{ROOT / 'workloads'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAPTURE_FPS='fast'" in lines[0], done.stderr


async def test_a_slow_stream_client_loses_old_results_and_blocks_nobody() -> None:
    broadcaster = Broadcaster(queue_size=4)
    slow = broadcaster.subscribe()
    fast = broadcaster.subscribe()
    received: list[int] = []

    async def read_fast() -> None:
        while len(received) < 20:
            received.append(await fast.queue.get())

    reader = asyncio.create_task(read_fast())

    def publish() -> None:
        """Each item once the fast reader has the one before: it keeps up, however loaded the machine; the slow
        one never reads. Were a full queue to block publish(), the fast reader would never get item 5."""
        for i in range(20):
            broadcaster.publish(i)
            deadline = time.monotonic() + 5
            while len(received) <= i and time.monotonic() < deadline:
                time.sleep(0.001)

    publisher = threading.Thread(target=publish)
    publisher.start()
    await asyncio.to_thread(publisher.join)
    await asyncio.wait_for(reader, 5)
    assert received == list(range(20))
    assert slow.queue.qsize() == 4 and slow.dropped == 16
    assert [slow.queue.get_nowait() for _ in range(4)] == [16, 17, 18, 19]
    broadcaster.unsubscribe(slow)
    broadcaster.unsubscribe(fast)
    assert broadcaster.subscribers == 0


def test_the_service_with_a_video_camera_serves_and_stops_promptly_with_a_stream_open(photo_video: Path) -> None:
    """`CAPTURE_SOURCE=video make run` in a real process; SIGINT with an SSE client connected ends it in seconds."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'contract'}:{ROOT / 'workloads'}",
        VisionEnv.CAPTURE_SOURCE: str(photo_video),
        VisionEnv.CAPTURE_LOOP: "true",
        VisionEnv.PORT: str(port),
        VisionEnv.NUM_THREADS: "1",
    }
    log = stop_with_a_live_stream_open(
        "korall_workloads.vision",
        env,
        f"http://127.0.0.1:{port}",
        up_path="/detections",
        stream_path="/detections/stream",
        start_timeout_s=30,
    )
    assert "camera streaming -> stopped: service shutting down" in log
    assert "Traceback" not in log and "graceful shutdown exceeded" not in log
