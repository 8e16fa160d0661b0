"""A full disk, for real: the downloader runs in its own mount namespace on a 2 MiB tmpfs as its cache.

`unshare --mount` gives the process a private mount table, so the tmpfs is visible to it alone and vanishes
with it; what is left in the cache is listed from inside the namespace before it ends. Needs root (CI and
this machine run as root); elsewhere the tests are skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fetch_helpers import MODEL, MODEL_SHA256, run_fetch_process
from object_server import Misbehaviour, ObjectServer

IN_SMALL_TMPFS = [
    "unshare",
    "--mount",
    "sh",
    "-c",
    'mount -t tmpfs -o size=2m tmpfs "$MODEL_CACHE_DIR" || exit 99; "$0" "$@"; rc=$?; '
    'echo "LEFT:$(ls -A "$MODEL_CACHE_DIR/sha256" | tr "\\n" " ")" >&2; exit $rc',
]


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs root to mount a tmpfs in a private mount namespace")


def _left(stderr: str) -> list[str]:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("LEFT:"))
    return line.removeprefix("LEFT:").split()


def test_a_model_that_cannot_fit_is_refused_before_it_fills_the_disk(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    with ObjectServer() as srv:
        run = run_fetch_process(tmp_path, IN_SMALL_TMPFS, MODEL_SHA256=MODEL_SHA256, MODEL_URL=srv.put("/m", MODEL))
    assert run.code == 9, run.stderr
    assert run.message.startswith("ModelDownloadFailed: DiskFull: the model needs 6175408 more bytes")
    assert _left(run.stderr) == [f"{MODEL_SHA256}.lock"]


def test_a_disk_that_fills_while_streaming_is_disk_full_and_the_partial_is_removed(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    with ObjectServer() as srv:  # chunked: no length to check up front, so the write itself hits ENOSPC
        url = srv.put("/m", MODEL, Misbehaviour(chunked=True))
        run = run_fetch_process(tmp_path, IN_SMALL_TMPFS, MODEL_SHA256=MODEL_SHA256, MODEL_URL=url)
    assert run.code == 9, run.stderr
    assert run.message.startswith("ModelDownloadFailed: DiskFull: cannot write the model into the cache")
    assert "No space left on device" in run.message
    assert _left(run.stderr) == [f"{MODEL_SHA256}.lock"]
