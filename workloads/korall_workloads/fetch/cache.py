"""The node's content-addressed model cache: where a model lives, how it is locked, written and published.

Layout under the cache root (MODEL_CACHE_DIR, a hostPath shared by every pod on the node):

    sha256/<hex>           a complete, verified model; read-only; only ever appears by an atomic rename
    sha256/<hex>.partial   the download in progress (or interrupted: the next run resumes it)
    sha256/<hex>.lock      flock()ed by the one process downloading <hex>; kept, empty (see `locked`)

A file is named by its content, so two InferenceModels with the same sha256 share it, and a name never
points at different bytes. Nothing reads a .partial file except the downloader holding the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .failures import FetchFailure, Reason

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # read, hash and write in 1 MiB blocks: few syscalls, flat memory
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def storage_failure(exc: OSError, doing: str) -> FetchFailure:
    """An OSError of the cache as a FetchFailure: DiskFull for ENOSPC/EDQUOT, CacheError otherwise."""
    reason = Reason.DISK_FULL if exc.errno in _DISK_FULL else Reason.CACHE_ERROR
    return FetchFailure(reason, f"{doing}: {exc.strerror or exc}")


def hash_stream(f: BinaryIO, hasher: hashlib._Hash | None = None) -> tuple[hashlib._Hash, int]:
    """Feed everything `f` has left into `hasher` (a new sha256 if None); return it and the byte count."""
    h = hasher if hasher is not None else hashlib.sha256()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    while n := f.readinto(view):  # type: ignore[attr-defined]
        h.update(view[:n])
        total += n
    return h, total


class ModelCache:
    """One cache root. All methods raise FetchFailure (CacheError or DiskFull), never a bare OSError."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "sha256"

    def model(self, digest: str) -> Path:
        return self.dir / digest

    def partial(self, digest: str) -> Path:
        return self.dir / f"{digest}.partial"

    def prepare(self) -> None:
        """Create sha256/ (and the root) if needed; the first pod on a node finds an empty hostPath."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_failure(exc, f"cannot create the cache folder {self.dir}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise FetchFailure(Reason.CACHE_ERROR, f"the cache folder {self.dir} is not writable by uid {os.getuid()}")

    def cached_digest(self, digest: str) -> str | None:
        """sha256 of the cached model file, or None when there is none. Hashes the whole file (re-verification)."""
        path = self.model(digest)
        try:
            with path.open("rb", buffering=0) as f:
                return hash_stream(f)[0].hexdigest()
        except (FileNotFoundError, NotADirectoryError):  # not cached (prepare() then says what is wrong)
            return None
        except OSError as exc:
            raise storage_failure(exc, f"cannot read the cached model {path}") from None

    def discard(self, path: Path) -> None:
        """Delete a file of the cache (a corrupt model, a partial that cannot be used); absent is fine."""
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise storage_failure(exc, f"cannot delete {path}") from None

    @contextlib.contextmanager
    def locked(self, digest: str, timeout_s: float, poll_s: float = 0.1) -> Iterator[None]:
        """Hold the exclusive flock of `digest` for the block; wait at most `timeout_s` for another holder.

        flock is released by the kernel when its holder dies (an OOM-killed or evicted pod), so a crash never
        leaves the model locked. The lock file is never deleted: unlinking it while another process waits on
        the old inode would let two processes hold "the" lock at once.
        """
        path = self.dir / f"{digest}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_failure(exc, f"cannot open the lock file {path}") from None
        try:
            deadline = time.monotonic() + timeout_s
            waiting = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting:
                        log.info("another process on this node is downloading sha256:%s; waiting for it", digest)
                        waiting = True
                    if time.monotonic() >= deadline:
                        raise FetchFailure(
                            Reason.LOCK_TIMEOUT,
                            f"another process held the download lock {path} for more than {timeout_s:g} s",
                        ) from None
                    time.sleep(poll_s)
            yield
        finally:
            os.close(fd)  # releases the lock

    def open_partial(self, digest: str) -> BinaryIO:
        """The partial file of `digest` for reading and appending (created empty if absent), unbuffered."""
        path = self.partial(digest)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_failure(exc, f"cannot open {path}") from None
        return open(fd, "r+b", buffering=0)  # the caller closes it

    def publish(self, partial: BinaryIO, digest: str) -> Path:
        """Make the verified partial file the cached model: fsync, read-only, atomic rename, fsync the folder.

        After this returns the model survives a power cut, and no reader ever sees it incomplete.
        """
        src, dst = self.partial(digest), self.model(digest)
        try:
            partial.flush()
            os.fsync(partial.fileno())
            os.fchmod(partial.fileno(), 0o444)
            os.replace(src, dst)
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise storage_failure(exc, f"cannot move the downloaded model to {dst}") from None
        return dst
