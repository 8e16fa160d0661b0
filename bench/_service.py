"""What the benches share: a free loopback port, a process's CPU time, the vision service started as in its image."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far, all its threads (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_vision(port: int, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`python -m korall_workloads.vision` on 127.0.0.1:`port` with `env` over this environment, once /ready is
    200 (at most 60 s; SystemExit if it exits or never gets ready)."""
    full = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "ACCELERATOR": "cpu",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("contract", "workloads")),
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "korall_workloads.vision"], env=full, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the service did not become ready in 60 s")
