"""Camera credentials never shown (issue 15): `python -m korall_workloads.vision` with a source URL that carries a
password with an `@` in its user information and more credentials in its query, pointed at a closed loopback port
so that it fails for real: /health, /ready, /camera, /detections and the whole log show it redacted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
from korall_contract import HttpEnv, VisionEnv, env_names
from vision_helpers import ROOT, free_port

SOURCE_TEMPLATE = "http://admin:pa@ss-9f1c@127.0.0.1:{port}/video.mjpg?user=admin&pwd=hunter2-77b"
SECRETS = ("pa@ss-9f1c", "hunter2-77b", "admin:")


def test_a_camera_url_with_credentials_is_shown_redacted_everywhere() -> None:
    port, closed = free_port(), free_port()  # nothing listens on `closed`: the camera fails to connect
    source = SOURCE_TEMPLATE.format(port=closed)
    env = {k: v for k, v in os.environ.items() if k not in env_names(VisionEnv) | env_names(HttpEnv)}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("contract", "workloads")),
            VisionEnv.PORT: str(port),
            VisionEnv.NUM_THREADS: "1",
            VisionEnv.CAPTURE_SOURCE: source,
            VisionEnv.CAPTURE_RECONNECT_MIN_S: "0.2",
            VisionEnv.CAPTURE_RECONNECT_MAX_S: "0.5",
            VisionEnv.CAPTURE_STALL_TIMEOUT_S: "1",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "korall_workloads.vision"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "no failed camera attempt seen"
            try:
                health = httpx.get(url + "/health", timeout=5).json()
                if health.get("camera", {}).get("reconnects", 0) >= 1 and health["camera"]["reason"]:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        replies = {path: httpx.get(url + path, timeout=5) for path in ("/health", "/ready", "/camera", "/detections")}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    shown = f"http://***@127.0.0.1:{closed}/video.mjpg?user=***&pwd=***"
    assert replies["/camera"].json()["source"] == shown
    assert replies["/health"].json()["camera"]["source"] == shown
    assert (replies["/ready"].status_code, replies["/detections"].status_code) == (503, 503)
    for path, reply in replies.items():
        for secret in SECRETS:
            assert secret not in reply.text, f"{path} shows {secret!r}: {reply.text}"
    assert "camera" in out and shown in out  # the log talks about the camera, redacted
    for secret in SECRETS:
        assert secret not in out, f"the log shows {secret!r}"
