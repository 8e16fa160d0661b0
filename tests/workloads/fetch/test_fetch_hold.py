"""The vision pod's model-hold sidecar (`python -m korall_workloads.fetch.hold`), run as a real process as the kubelet
runs it: it holds the pod's model in the node cache, so the cache's collection (`ModelCache.collect`, what every
other pod's downloader runs) never removes it while the vision container restarts; it ends at once, with 0, on
SIGTERM; a model it cannot hold is one line in the termination message and exit 1 (the kubelet restarts it, and the
operator reports the crash loop with that line)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_helpers import MODEL, MODEL_SHA256, RunFetch, cache_files, fetch_env
from korall_workloads.fetch.cache import ModelCache
from object_server import ObjectServer

DAY = 86400.0


class Hold:
    """The sidecar as a process, with its stderr read line by line."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.env = fetch_env(tmp_path, **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "korall_workloads.fetch.hold"], env=self.env, stderr=subprocess.PIPE, text=True
        )

    def first_line(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.readline()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=5)  # at once, not after a grace period

    @property
    def termination_message(self) -> str:
        return Path(self.env["TERMINATION_MESSAGE_PATH"]).read_text().strip()


@pytest.fixture
def holds() -> Iterator[list[Hold]]:
    started: list[Hold] = []
    yield started
    for hold in started:
        if hold.proc.poll() is None:
            hold.proc.kill()
            hold.proc.wait()


def unused_for(tmp_path: Path, digest: str, days: float) -> None:
    """Make the cached model look last used `days` ago, as on a node that ran it long before."""
    then = time.time() - days * DAY
    for name in (digest, f"{digest}.lock"):
        os.utime(tmp_path / "cache" / "sha256" / name, (then, then))


def test_the_sidecar_keeps_its_model_through_collections_until_the_pod_ends(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch, holds: list[Hold]
) -> None:
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL))  # the init container
    assert run.code == 0, run.stderr
    unused_for(tmp_path, MODEL_SHA256, days=30)  # no pod started with it, no collection found it held, for a month
    hold = Hold(tmp_path, MODEL_SHA256=MODEL_SHA256)
    holds.append(hold)
    assert hold.first_line().startswith(f"holding sha256:{MODEL_SHA256}")
    cache = ModelCache(tmp_path / "cache")
    # Another pod's downloader collects, the cache over budget, while the vision container restarts (holding
    # nothing): the sidecar's lock keeps the model.
    assert cache.collect(keep="", max_bytes=0, keep_s=DAY) == []
    assert MODEL_SHA256 in cache_files(tmp_path)
    assert hold.stop() == 0
    # The pod has ended: the next collection two days on removes the model.
    removed = cache.collect(keep="", max_bytes=0, keep_s=DAY, now=time.time() + 2 * DAY)
    assert [r.name for r in removed] == [MODEL_SHA256] and MODEL_SHA256 not in cache_files(tmp_path)


def test_the_sidecar_waits_out_an_exclusive_holder_and_stops_at_once_while_it_waits(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch, holds: list[Hold]
) -> None:
    assert run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL)).code == 0
    lock = os.open(tmp_path / "cache" / "sha256" / f"{MODEL_SHA256}.lock", os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a collection holds while it looks at the model
        waiting = Hold(tmp_path, MODEL_SHA256=MODEL_SHA256)
        holds.append(waiting)
        time.sleep(0.5)
        assert waiting.proc.poll() is None  # still waiting, not failed
        assert waiting.stop() == 0  # the pod ended meanwhile: no grace period spent
        assert waiting.proc.stderr is not None and "holding" not in waiting.proc.stderr.read()
        later = Hold(tmp_path, MODEL_SHA256=MODEL_SHA256)
        holds.append(later)
        time.sleep(0.3)
        fcntl.flock(lock, fcntl.LOCK_UN)  # the collection left the model alone
        assert later.first_line().startswith(f"holding sha256:{MODEL_SHA256}")
        with pytest.raises(BlockingIOError):  # held now: a collection's exclusive lock is refused
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert later.stop(signal.SIGINT) == 0
    finally:
        os.close(lock)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("removed", "was removed before this pod held it"),
        ("no lock file", "cannot open"),
        ("bad digest", "MODEL_SHA256 must be 64 hex digits, got 'abc'"),
    ],
)
def test_a_model_it_cannot_hold_is_one_line_and_exit_1(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch, holds: list[Hold], case: str, expected: str
) -> None:
    assert run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL)).code == 0
    folder = tmp_path / "cache" / "sha256"
    if case == "removed":
        (folder / MODEL_SHA256).unlink()  # a collection took it between the download and this sidecar
    elif case == "no lock file":
        (folder / f"{MODEL_SHA256}.lock").unlink()
    hold = Hold(tmp_path, MODEL_SHA256="abc" if case == "bad digest" else MODEL_SHA256)
    holds.append(hold)
    assert hold.proc.wait(timeout=10) == 1
    message = hold.termination_message
    assert message.startswith("ModelNotCached: sha256:") and expected in message, message
    assert message.endswith("delete this pod, its replacement downloads the model again") and "\n" not in message
