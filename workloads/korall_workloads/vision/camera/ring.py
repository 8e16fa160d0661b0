"""The bounded hand-over between the capture thread and the inference worker.

Capture must never wait for inference: `put` never blocks, and when the ring is full the oldest frame is
dropped and counted. Inference wants the freshest picture, not a backlog: `take_newest` returns the newest
frame and discards the older ones it skipped (also counted), so a slow detector falls behind by at most one
inference, never by a growing queue.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class RingCounters:
    """Totals since the ring was made; `max_depth` is the high-water mark of the queue."""

    put: int = 0
    dropped_full: int = 0
    superseded: int = 0
    max_depth: int = 0


@dataclass
class Taken(Generic[T]):
    item: T
    superseded: int = 0
    skipped: list[T] = field(default_factory=list)


class FrameRing(Generic[T]):
    """A thread-safe drop-oldest ring of at most `capacity` items."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.counters = RingCounters()

    def put(self, item: T) -> bool:
        """Add an item without ever blocking; returns True if the oldest one had to be dropped for it."""
        with self._cond:
            dropped = len(self._items) >= self.capacity
            if dropped:
                self._items.popleft()
                self.counters.dropped_full += 1
            self._items.append(item)
            self.counters.put += 1
            self.counters.max_depth = max(self.counters.max_depth, len(self._items))
            self._cond.notify()
            return dropped

    def take_newest(self, timeout: float | None = None) -> Taken[T] | None:
        """Wait up to `timeout` for an item; return the newest and discard (count) the older ones."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            newest = self._items.pop()
            skipped = list(self._items)
            self._items.clear()
            self.counters.superseded += len(skipped)
            return Taken(newest, len(skipped), skipped)

    def wake(self) -> None:
        """Wake a waiting consumer (used at shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
