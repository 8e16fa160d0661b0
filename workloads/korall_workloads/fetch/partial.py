"""The download so far: the partial file, the sha256 of its bytes, and the thread that computes it.

Receiving and writing a block costs about as much as hashing it (sha256 runs at 1-1.5 GB/s on one core, a
loopback download at about the same), so done one after the other they would halve the throughput. hashlib
releases the interpreter lock, so `BackgroundHasher` hashes each block on a worker thread while the
receiving thread writes it and reads the next. A ring of four 1 MiB buffers, allocated once per download,
keeps memory flat: the receiver waits when all four are still being hashed.

Writeback is started as the file grows (`posix_fadvise(DONTNEED)` on the freshly written range starts the
kernel writing it and returns at once), so that the fsync before the rename has only the last blocks left.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import os
import queue
import threading
from typing import BinaryIO

from .cache import storage_failure

RECEIVE_BLOCK = 1 << 20
BUFFERS = 4
WRITEBACK_EVERY = 1 << 20


class BackgroundHasher:
    """sha256 of the blocks handed to it, computed on its own thread in the order they were submitted."""

    def __init__(self, hasher: hashlib._Hash | None = None, buffers: int = BUFFERS) -> None:
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self._free: queue.Queue[memoryview] = queue.Queue()
        self._unallocated = buffers  # allocated when first needed: a small model never needs all of them
        self._work: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
        self._done = threading.Event()
        # Not threading.Thread: its start() waits until the new thread runs, which costs milliseconds on a busy
        # node, a tenth of a small model's download. This thread needs no waiting for: work queues up for it.
        _thread.start_new_thread(self._run, ())

    def buffer(self) -> memoryview:
        """A free 1 MiB buffer (waits while all are being hashed)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._unallocated:
                self._unallocated -= 1
                return memoryview(bytearray(RECEIVE_BLOCK))
            return self._free.get()

    def release(self, buf: memoryview) -> None:
        """Give back a buffer that will not be submitted."""
        self._free.put(buf)

    def submit(self, buf: memoryview, n: int) -> None:
        """Hash `buf[:n]` next; the buffer returns to the free ring afterwards."""
        self._work.put((buf, n))

    def hexdigest(self) -> str:
        """The digest of everything submitted so far (waits for the worker to catch up)."""
        self._work.join()
        return self.hasher.hexdigest()

    def reset(self) -> None:
        self._work.join()
        self.hasher = hashlib.sha256()

    def close(self) -> None:
        self._work.put(None)
        self._done.wait()

    def _run(self) -> None:
        try:
            while (item := self._work.get()) is not None:
                buf, n = item
                self.hasher.update(buf[:n])
                self._free.put(buf)
                self._work.task_done()
            self._work.task_done()
        finally:
            self._done.set()


class Partial:
    """The open partial file, how many bytes it holds, and their hash (see the module docstring)."""

    def __init__(self, file: BinaryIO, hasher: hashlib._Hash, size: int, *, resumed_from_earlier_run: bool) -> None:
        self.file = file
        self.size = size
        self.resumed_from_earlier_run = resumed_from_earlier_run
        self.hashing = BackgroundHasher(hasher)
        self._written_back = size

    def hexdigest(self) -> str:
        return self.hashing.hexdigest()

    def close(self) -> None:
        self.hashing.close()

    def restart(self) -> None:
        """Throw away what we have (a server that ignored Range, or bytes that failed the hash)."""
        self.hashing.reset()
        try:
            self.file.seek(0)
            self.file.truncate(0)
        except OSError as exc:
            raise storage_failure(exc, "cannot truncate the partial file") from None
        self.size = self._written_back = 0
        self.resumed_from_earlier_run = False

    def append(self, buf: memoryview, n: int) -> None:
        """Write `buf[:n]`, then hand the buffer to the hasher. A full disk is DiskFull, other errors CacheError;
        on an error the buffer is not handed over (the caller releases it)."""
        view = buf[:n]
        try:
            while view:  # an unbuffered write may take only part of the block
                written = self.file.write(view)
                view = view[written or 0 :]
        except OSError as exc:
            raise storage_failure(exc, "cannot write the model into the cache") from None
        self.size += n
        self.hashing.submit(buf, n)
        if self.size - self._written_back >= WRITEBACK_EVERY:
            with contextlib.suppress(OSError):  # only an optimisation
                os.posix_fadvise(
                    self.file.fileno(), self._written_back, self.size - self._written_back, os.POSIX_FADV_DONTNEED
                )
            self._written_back = self.size
