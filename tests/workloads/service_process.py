"""Shared by the vision and audio tests: a workload service as a real process, and its shutdown with a live client."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx


def stop_with_a_live_stream_open(
    module: str,
    env: dict[str, str],
    url: str,
    *,
    up_path: str,
    stream_path: str,
    headers: dict[str, str] | None = None,
    start_timeout_s: float = 60,
) -> str:
    """Run `python -m module`, wait until `up_path` answers 200, read one event of `stream_path`, send SIGINT.

    Asserts that the server ends the stream itself and the process exits within seconds (Kubernetes sends
    SIGTERM and waits: a stream that outlives it would be a killed pod). Returns the process's stderr.
    """
    proc = subprocess.Popen([sys.executable, "-m", module], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(f"{url}{up_path}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.1)
        with httpx.stream("GET", f"{url}{stream_path}", headers=headers, timeout=10) as reply:
            lines = reply.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            proc.send_signal(signal.SIGINT)
            stopped = time.monotonic()
            for _ in lines:  # the server ends the stream instead of waiting for the client
                pass
        proc.wait(timeout=15)
        assert time.monotonic() - stopped < 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.stderr.read() if proc.stderr else ""
