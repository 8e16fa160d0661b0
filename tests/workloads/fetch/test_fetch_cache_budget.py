"""The node cache kept to its budget (MODEL_CACHE_MAX_BYTES): the downloader, run as the init container runs it,
removes the models used least recently, and never one a process holds or one a pod started with recently.

The other models in the cache are files of the right names with their use time set in the past (what a node that
ran them for days would have); the model fetched is the real one, from a real HTTP server. A running vision service
holds its model with `korall_workloads.vision.catalog.hold_if_cached`, the function the service itself calls."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from fetch_helpers import MODEL, MODEL_SHA256, RunFetch, cache_files
from korall_workloads.vision import catalog
from object_server import ObjectServer

MIB = 1024 * 1024
DAY = 86400.0


def old_model(tmp_path: Path, name: str, size: int, days_unused: float, *, partial: bool = False) -> str:
    """A cached model (or an abandoned download) a pod last started with `days_unused` days ago."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    folder = tmp_path / "cache" / "sha256"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{digest}.partial" if partial else digest)
    path.write_bytes(os.urandom(size))
    lock = folder / f"{digest}.lock"
    lock.touch()
    then = time.time() - days_unused * DAY
    for p in (path, lock):
        os.utime(p, (then, then))
    return digest


def budget(extra: int) -> str:
    return str(MODEL.stat().st_size + extra)


def test_the_models_used_least_recently_go_until_the_cache_is_within_its_budget(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    oldest = old_model(tmp_path, "oldest", MIB, days_unused=9)
    older = old_model(tmp_path, "older", MIB, days_unused=5, partial=True)  # a download no pod came back for
    old = old_model(tmp_path, "old", MIB, days_unused=2)
    recent = old_model(tmp_path, "recent", MIB, days_unused=0.1)  # within MODEL_CACHE_KEEP_S (a day)
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=server.put("/m.tflite", MODEL),
                    MODEL_CACHE_MAX_BYTES=budget(MIB // 2))  # fmt: skip
    assert run.code == 0, run.stderr
    left = cache_files(tmp_path)
    assert MODEL_SHA256 in left and recent in left, left  # the new one, and one used within the keep time
    assert oldest not in left and f"{older}.partial" not in left and old not in left, left
    assert f"removed {oldest} ({MIB} bytes, unused for 216.0 h)" in run.stderr
    # Still over budget: what is left is in use or recent, and says so.
    assert "over its" in run.stderr and "MODEL_CACHE_KEEP_S" in run.stderr
    lock = tmp_path / "cache" / "sha256" / f"{MODEL_SHA256}.lock"
    assert time.time() - lock.stat().st_mtime < 60  # marked used: the next collection leaves it for a day


def test_a_model_a_running_service_holds_stays_however_old_until_it_is_let_go(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    held = old_model(tmp_path, "held", MIB, days_unused=30)
    path = tmp_path / "cache" / "sha256" / held
    lock = path.with_name(f"{held}.lock")
    catalog.hold_if_cached(path)  # what the vision service does before it reads its model
    try:
        url = server.put("/m.tflite", MODEL)
        run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_CACHE_MAX_BYTES=budget(0))
        assert run.code == 0, run.stderr
        assert path.exists() and "over its" in run.stderr
        # Found in use, it counts as used now: a service that restarts (and holds nothing for that moment) a day
        # after its pod started does not lose its model to the next collection.
        assert time.time() - lock.stat().st_mtime < 60
    finally:
        os.close(catalog._held.pop(path))  # the service has stopped
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_CACHE_MAX_BYTES=budget(0))
    assert run.code == 0 and path.exists(), run.stderr  # let go, but used within the keep time
    then = time.time() - 2 * DAY
    os.utime(lock, (then, then))  # two days on, nothing has used it
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_CACHE_MAX_BYTES=budget(0))  # a cache hit collects too
    assert run.code == 0 and "cache hit" in run.message, run.stderr
    assert not path.exists() and cache_files(tmp_path) == sorted([MODEL_SHA256, f"{MODEL_SHA256}.lock", f"{held}.lock"])


def test_a_budget_of_zero_removes_nothing_and_a_keep_time_under_a_minute_is_refused(
    tmp_path: Path, server: ObjectServer, run_fetch: RunFetch
) -> None:
    ancient = old_model(tmp_path, "ancient", MIB, days_unused=365)
    url = server.put("/m.tflite", MODEL)
    assert run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_CACHE_MAX_BYTES="0").code == 0
    assert ancient in cache_files(tmp_path)
    run = run_fetch(MODEL_SHA256=MODEL_SHA256, MODEL_URL=url, MODEL_CACHE_KEEP_S="5")
    assert run.code != 0 and run.message.startswith("ModelDownloadFailed: InvalidConfiguration")
    assert "MODEL_CACHE_KEEP_S" in run.message and ancient in cache_files(tmp_path)
