"""`python -m korall_workloads.fetch.hold`: hold the pod's model in the node's cache for the pod's whole life.

The vision service holds its model (a shared flock of `<hex>.lock`) while it runs, but a vision container that
restarts holds nothing until it runs again, and a collection of the over-budget cache (another pod's downloader)
could remove the model in that moment; the restarted container would then have no model. This process is the
vision pod's native sidecar (an init container with `restartPolicy: Always`, after model-fetch): the kubelet
starts it once the download is done and keeps it running until the pod ends, across restarts of the vision
container. It takes the same shared lock, waits for SIGTERM, and exits 0.

Standard library and the contract only: it is a few MB of one idle process per pod. A model that is not (or no
longer) in the cache when it starts is a failure with one line in the termination message, and the container
restarts (the operator reports the crash loop with that line).
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sys
from pathlib import Path

from korall_contract import DEFAULT_MODEL_CACHE_DIR, FetchEnv

from .failures import one_line, write_termination_message

NOT_CACHED = "ModelNotCached"
"""First word of the sidecar's termination message when it cannot hold the model."""
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
POLL_S = 0.1  # how often to try the lock again while an exclusive holder (a collection, a download) has it


class NotHeld(Exception):
    """The model cannot be held: not in the cache, or its lock file cannot be opened."""


def hold(cache_dir: Path, digest: str) -> int | None:
    """Take the shared lock of `digest` (waiting out an exclusive holder) and return its descriptor, kept open for
    as long as the process runs; None when a stop signal came first. The model file must be there under the lock:
    a collection removes a model only under the exclusive lock, so once held it stays."""
    lock, model = cache_dir / "sha256" / f"{digest}.lock", cache_dir / "sha256" / digest
    try:
        fd = os.open(lock, os.O_RDONLY)  # the cache is mounted read-only here; the downloader made the file
    except OSError as exc:
        raise NotHeld(f"cannot open {lock}: {exc.strerror or exc}") from None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            break
        except BlockingIOError:  # a collection looks at it, or a download of it runs: wait, stay stoppable
            if signal.sigtimedwait(STOP_SIGNALS, POLL_S) is not None:
                os.close(fd)
                return None
    if not model.is_file():
        os.close(fd)
        raise NotHeld(f"{model} was removed before this pod held it")
    return fd


def main() -> int:
    # Signals are taken with sigwait, never by a handler: PID 1 of a container ignores a signal it has no handler
    # for, and this one must end at once when the pod stops (not after its grace period).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    cache_dir = Path(os.environ.get(FetchEnv.MODEL_CACHE_DIR) or DEFAULT_MODEL_CACHE_DIR)
    digest = (os.environ.get(FetchEnv.MODEL_SHA256) or "").strip().lower()
    termination = Path(os.environ.get(FetchEnv.TERMINATION_MESSAGE_PATH) or "/dev/termination-log")
    try:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise NotHeld(f"{FetchEnv.MODEL_SHA256} must be 64 hex digits, got {digest[:80]!r}")
        fd = hold(cache_dir, digest)
    except NotHeld as exc:
        line = one_line(
            f"{NOT_CACHED}: sha256:{digest[:64]} is not held in the node's model cache: {exc}; delete this pod, "
            "its replacement downloads the model again"
        )
        write_termination_message(termination, line)
        print(line, file=sys.stderr, flush=True)
        return 1
    if fd is not None:
        print(f"holding sha256:{digest} in {cache_dir} for this pod's life", file=sys.stderr, flush=True)
        signal.sigwait(STOP_SIGNALS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
