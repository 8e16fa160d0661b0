"""Where events go once detected: a bounded history for GET /events and bounded queues for live subscribers.

`publish` is called from the capture thread; subscribers live on the server's event loop, so items cross over
with `call_soon_threadsafe`. A subscriber that does not keep up loses its oldest items (counted), never the
capture thread's time, and never memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from korall_workloads.audio.events import AudioEvent
from korall_workloads.audio.features import ChunkFeatures


@dataclass(eq=False)
class Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]
    dropped: int = 0
    types: frozenset[str] = field(default_factory=frozenset)


class EventHub:
    def __init__(
        self,
        max_events: int = 1000,
        max_chunks: int = 120,
        client_queue: int = 64,
        max_clients: int = 32,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.max_events = max_events
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._chunks: deque[dict[str, float]] = deque(maxlen=max_chunks)
        self._ids = itertools.count(1)
        self._subscribers: list[Subscription] = []
        self.client_queue = client_queue
        self.max_clients = max_clients
        self._on_drop = on_drop

    def publish(self, event: AudioEvent) -> dict[str, Any]:
        """Number the event, keep it, hand it to every live subscriber; returns the published record."""
        with self._lock:
            record = {"id": next(self._ids), **event.as_dict(), "emitted_at": round(time.time(), 3)}
            self._events.append(record)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if not sub.types or record["type"] in sub.types:
                # RuntimeError: that client's loop is closed; it unsubscribes on its own.
                with contextlib.suppress(RuntimeError):
                    sub.loop.call_soon_threadsafe(self._offer, sub, record)
        return record

    def _offer(self, sub: Subscription, record: dict[str, Any]) -> None:
        if sub.queue.full():
            sub.queue.get_nowait()
            sub.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        sub.queue.put_nowait(record)

    def add_chunk(self, features: ChunkFeatures) -> None:
        with self._lock:
            self._chunks.append(features.as_dict())

    def recent(
        self, types: set[str] | None = None, since_s: float | None = None, after_id: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest `limit` events matching the filters, oldest first."""
        with self._lock:
            items = list(self._events)
        picked = [
            e
            for e in items
            if e["id"] > after_id and (not types or e["type"] in types) and (since_s is None or e["end_s"] >= since_s)
        ]
        return picked[-limit:] if limit else []

    def recent_chunks(self, limit: int) -> list[dict[str, float]]:
        with self._lock:
            items = list(self._chunks)
        return items[-limit:] if limit else []

    def subscribe(self, types: set[str] | None = None) -> Subscription | None:
        """A new live subscription on the running loop, or None when `max_clients` are already listening."""
        sub = Subscription(asyncio.get_running_loop(), asyncio.Queue(self.client_queue), types=frozenset(types or ()))
        with self._lock:
            if len(self._subscribers) >= self.max_clients:
                return None
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)
