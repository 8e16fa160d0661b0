"""The node's content-addressed model cache: where a model lives, how it is locked, written and published.

Layout under the cache root (MODEL_CACHE_DIR, a hostPath shared by every pod on the node):

    sha256/<hex>           a complete, verified model; read-only; only ever appears by an atomic rename
    sha256/<hex>.partial   the download in progress (or interrupted: the next run resumes it)
    sha256/<hex>.lock      flock()ed by the one process downloading <hex> (exclusive), and shared by every process
                           that uses the model (a downloader's cache hit, a running vision service); kept, empty
                           (see `locked`); its mtime is when the model was last used: a pod on the node
                           started with it, or a collection found it held
    collect.lock           flock()ed by the one process collecting (see `collect`)

A file is named by its content, so two InferenceModels with the same sha256 share it, and a name never
points at different bytes. Nothing reads a .partial file except the downloader holding the lock.

The cache is bounded like the kubelet's images: once it holds more than MODEL_CACHE_MAX_BYTES, the models used
least recently are removed, but never one a process holds (its lock is shared or exclusive), nor one used in the
last MODEL_CACHE_KEEP_S: a pod started with it (between a download and the start of the service that holds it), or
a collection found it held (so a service that restarts does not lose its model in the moment it holds nothing).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .failures import FetchFailure, Reason

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # read, hash and write in 1 MiB blocks: few syscalls, flat memory
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_CACHED = re.compile(r"^([0-9a-f]{64})(\.partial)?$")  # a model, or a download of one; not a lock file


@dataclass(frozen=True)
class Removed:
    """A file the collection removed from the cache."""

    name: str  # <hex> or <hex>.partial
    size: int
    idle_s: float  # since it was last used (a pod started with it, a collection found it held)


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

    def lock_file(self, digest: str) -> Path:
        return self.dir / f"{digest}.lock"

    @contextlib.contextmanager
    def locked(self, digest: str, timeout_s: float, poll_s: float = 0.1, *, shared: bool = False) -> Iterator[None]:
        """Hold the exclusive (or `shared`) flock of `digest` for the block; wait at most `timeout_s` for another
        holder (an exclusive one: a download of it, or a collection removing it).

        flock is released by the kernel when its holder dies (an OOM-killed or evicted pod), so a crash never
        leaves the model locked. The lock file is never deleted: unlinking it while another process waits on
        the old inode would let two processes hold "the" lock at once.
        """
        path = self.lock_file(digest)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_failure(exc, f"cannot open the lock file {path}") from None
        try:
            deadline = time.monotonic() + timeout_s
            waiting = False
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
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

    def mark_used(self, digest: str) -> None:
        """Record that a pod on this node starts with `digest` now (the mtime of its lock file, which the caller
        holds): the collection removes the models used least recently first, and none used within its keep time."""
        try:
            os.utime(self.lock_file(digest))
        except OSError as exc:  # the model is there and verified: not worth failing the pod for
            log.warning("cannot mark sha256:%s as used: %s", digest, exc.strerror or exc)

    def collect(self, keep: str, max_bytes: int, keep_s: float, now: float | None = None) -> list[Removed]:
        """Remove the models (and abandoned downloads) used least recently until the cache holds at most
        `max_bytes`; never `keep`, one used within `keep_s`, nor one a process holds. Returns what went.

        One collection at a time on a node (a second process skips it). Each removal happens under the model's own
        exclusive lock, taken without waiting (held: in use, skipped), and its last use is read again under it.
        """
        now = time.time() if now is None else now
        fd = os.open(self.root / "collect.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # another process on the node is collecting
            files = [(self._last_used(m[1], e), e.name, m[1], e.stat().st_size) for e in os.scandir(self.dir)
                     if (m := _CACHED.match(e.name)) and e.is_file(follow_symlinks=False)]  # fmt: skip
            total = sum(size for *_, size in files)
            removed: list[Removed] = []
            for _, name, digest, size in sorted(files):
                if total <= max_bytes:
                    break
                if digest != keep and (idle := self._remove_if_idle(name, digest, keep_s, now)) is not None:
                    total -= size
                    removed.append(Removed(name, size, idle))
            if total > max_bytes:
                log.warning("the model cache %s holds %d bytes, over its %d (MODEL_CACHE_MAX_BYTES); what is left is "
                            "in use or was used within MODEL_CACHE_KEEP_S", self.dir, total, max_bytes)  # fmt: skip
            return removed
        finally:
            os.close(fd)

    def _last_used(self, digest: str, entry: os.DirEntry[str] | None = None) -> float:
        """When `digest` was last used (its lock file's mtime), or when the file itself last changed if later."""
        times = [entry.stat().st_mtime] if entry is not None else []
        with contextlib.suppress(FileNotFoundError):
            times.append(self.lock_file(digest).stat().st_mtime)
        return max(times, default=0.0)

    def _remove_if_idle(self, name: str, digest: str, keep_s: float, now: float) -> float | None:
        """Remove `name` unless its model is held or was used within `keep_s`; its idle time if removed."""
        fd = os.open(self.lock_file(digest), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # in use: a running service, a cache hit being verified, or a download
                with contextlib.suppress(OSError):
                    os.utime(fd)  # used now: a service cannot mark it itself (its mount is read-only)
                return None
            path = self.dir / name
            with contextlib.suppress(FileNotFoundError):
                idle = now - max(self._last_used(digest), path.stat().st_mtime)
                if idle >= keep_s:
                    path.unlink()
                    return idle
            return None
        finally:
            os.close(fd)
