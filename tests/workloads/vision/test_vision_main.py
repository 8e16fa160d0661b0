"""`python -m korall_workloads.vision` (what `make run` and the image start) as a real process on a free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from korall_contract import VisionEnv, env_names
from vision_helpers import ROOT, encode, free_port, photo_rgb


def _start(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in env_names(VisionEnv)}
    base["PYTHONPATH"] = os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "workloads"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "korall_workloads.vision"],
        env={**base, VisionEnv.PORT: str(port), VisionEnv.NUM_THREADS: "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait(url: str, proc: subprocess.Popen[str], path: str, want: int) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            r = httpx.get(url + path, timeout=5)
            if r.status_code == want:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} never gave {want}")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


@pytest.fixture(scope="module")
def json_service() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = _start({VisionEnv.LOG_JSON: "true"})
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_the_service_starts_serves_a_photo_and_logs_it(json_service: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = json_service
    first = _wait(url, proc, "/health", 200)  # answers while (or after) the model loads
    assert first.json()["model"]["state"] in ("loading", "ready")
    _wait(url, proc, "/ready", 200)
    photo = encode(photo_rgb("chelsea"))
    r = httpx.post(url + "/infer", content=photo, headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and r.json()["detections"][0]["label"] == "cat"
    # A malformed multipart body is the client's: its 400 and access line say so, and nothing more is logged
    # (python-multipart warned once per such request: anyone could fill the log).
    multipart = {"content-type": "multipart/form-data; boundary=XYZ"}
    for body in (b"junk\r\n--XYZ--", b"--XYZ\r\nbad header line\r\n\r\nxx\r\n--XYZ--"):
        assert httpx.post(url + "/infer", content=body, headers=multipart, timeout=30).status_code == 400
    out = _stop(proc)
    # graceful stop on SIGTERM (uvicorn re-raises the signal after shutting down, hence -15)
    assert proc.returncode in (0, -15)
    assert "Application shutdown complete" in out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ready = next(rec for rec in records if rec.get("msg", "").startswith("model ready"))
    assert ready["sha256"] == r.json()["model"]["sha256"] and ready["accelerator"] == "cpu"
    assert ready["input_shape"] == [1, 300, 300, 3] and ready["model"] == "ssd_mobilenet_v2_coco"
    assert any(rec.get("level") == "warning" and "libedgetpu" in rec["msg"] for rec in records)  # why it runs on CPU
    access = next(rec for rec in records if rec.get("log") == "access" and rec["path"] == "/infer")
    assert (access["method"], access["status"], access["bytes_in"]) == ("POST", 200, len(photo))
    assert access["model_sha256"] == ready["sha256"] and access["latency_ms"] > 0 and access["token"] is None
    refused = [rec for rec in records if rec.get("log") == "access" and rec["status"] == 400]
    # The first is a preamble then the closing delimiter: no part at all; the second has a malformed part header.
    assert [rec["error"] for rec in refused] == ["missing_file", "bad_request"]
    assert not [rec for rec in records if rec.get("logger", "").startswith("python_multipart")], out
    infer = access["infer"]
    assert (infer["format"], infer["width"], infer["height"]) == ("JPEG", 451, 300) and infer["invoke_ms"] > 0


def test_edgetpu_without_a_tpu_refuses_to_start() -> None:
    """No Edge TPU here (real: libedgetpu is not installed): ACCELERATOR=edgetpu exits 1 with one clear line."""
    env = {**os.environ, VisionEnv.ACCELERATOR: "edgetpu", VisionEnv.PORT: "1"}
    done = subprocess.run(
        [sys.executable, "-m", "korall_workloads.vision"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("korall vision: refusing to start: ACCELERATOR=edgetpu")
    assert "libedgetpu.so.1" in lines[0] and "ACCELERATOR=auto" in lines[0]
