"""Helpers for the downloader tests: the real model as the object, and the downloader as a real process.

Every test runs `python -m korall_workloads.fetch` exactly as the init container does (environment in, exit
code and termination message out) against a real HTTP server on a loopback port.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from korall_contract import FetchEnv, env_names

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
MODEL_SHA256 = hashlib.sha256(MODEL.read_bytes()).hexdigest()


@dataclass
class Run:
    code: int
    message: str  # what the termination message file holds afterwards
    stderr: str


RunFetch = Callable[..., Run]


def fetch_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The process environment: ours without any FetchEnv name the calling shell may export, plus `env`."""
    base = {k: v for k, v in os.environ.items() if k not in env_names(FetchEnv)}
    termination = tmp_path / "termination-log"
    termination.touch()  # the kubelet creates it; the downloader only writes into an existing file
    return {
        **base,
        FetchEnv.MODEL_CACHE_DIR: str(tmp_path / "cache"),
        FetchEnv.TERMINATION_MESSAGE_PATH: str(termination),
        FetchEnv.MODEL_FETCH_BACKOFF_MIN_S: "0.05",
        FetchEnv.MODEL_FETCH_BACKOFF_MAX_S: "0.2",
        **env,
    }


def run_fetch_process(tmp_path: Path, prefix: list[str] | None = None, **env: str) -> Run:
    full = fetch_env(tmp_path, **env)
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "korall_workloads.fetch"],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    message = Path(full[FetchEnv.TERMINATION_MESSAGE_PATH]).read_text()
    return Run(proc.returncode, message.strip(), proc.stderr)


def cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
