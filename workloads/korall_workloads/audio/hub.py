"""Where events go once detected: a bounded history for GET /events and bounded queues for live subscribers; and
the live level of each chunk (GET /level/stream, the page's level meter), of which only the latest is kept.

`publish` is called from the capture thread; subscribers live on the server's event loop, so items cross over
with `call_soon_threadsafe`. A subscriber that does not keep up loses its oldest items (counted), never the
capture thread's time, and never memory without bound.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from korall_workloads.audio.events import AudioEvent
from korall_workloads.audio.features import ChunkFeatures
from korall_workloads.common.broadcast import Broadcaster, Subscription


class EventHub:
    def __init__(
        self,
        max_events: int = 1000,
        max_chunks: int = 120,
        client_queue: int = 64,
        max_clients: int = 32,
        max_per_client: int | None = None,
        on_drop: Callable[[], None] | None = None,
        on_publish: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.max_events = max_events
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._chunks: deque[dict[str, float]] = deque(maxlen=max_chunks)
        self._ids = itertools.count(1)
        self._live = Broadcaster(client_queue, max_clients=max_clients, max_per_client=max_per_client, on_drop=on_drop)
        self.levels = Broadcaster(client_queue, max_clients=max_clients, max_per_client=max_per_client)
        self._level: dict[str, Any] | None = None
        self._on_publish = on_publish  # e.g. event delivery: called with each record, on the publishing thread

    def publish(self, event: AudioEvent) -> dict[str, Any]:
        """Number the event, keep it, hand it to every live subscriber; returns the published record."""
        with self._lock:
            record = {"id": next(self._ids), **event.as_dict(), "emitted_at": round(time.time(), 3)}
            self._events.append(record)
        self._live.publish(record)
        if self._on_publish is not None:
            self._on_publish(record)
        return record

    def add_chunk(self, features: ChunkFeatures, level: dict[str, Any] | None = None) -> None:
        """Keep the chunk's features; hand its live `level` record (if any) to the level stream's clients."""
        with self._lock:
            self._chunks.append(features.as_dict())
            if level is not None:
                self._level = level
        if level is not None:
            self.levels.publish(level)

    def latest_level(self) -> dict[str, Any] | None:
        with self._lock:
            return self._level

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

    def require_room(self, client: str | None = None) -> None:
        """Raise TooManyClients when `max_clients` are already listening, or `client` holds its share."""
        self._live.require_room(client)

    def join(self, types: set[str] | None = None, client: str | None = None) -> Subscription:
        """A new live subscription on the running loop; raises TooManyClients (saying why) when there is no room."""
        wanted = frozenset(types or ())
        return self._live.join((lambda record: record["type"] in wanted) if wanted else None, client)

    def subscribe(self, types: set[str] | None = None, client: str | None = None) -> Subscription | None:
        """A new live subscription on the running loop, or None when there is no room (see `require_room`)."""
        wanted = frozenset(types or ())
        return self._live.subscribe((lambda record: record["type"] in wanted) if wanted else None, client)

    def close(self) -> None:
        """End every live stream (each subscriber receives None)."""
        self._live.close()
        self.levels.close()

    def unsubscribe(self, sub: Subscription) -> None:
        self._live.unsubscribe(sub)

    @property
    def subscribers(self) -> int:
        return self._live.subscribers

    @property
    def max_clients(self) -> int:
        return self._live.max_clients or 0

    @max_clients.setter
    def max_clients(self, value: int) -> None:
        self._live.max_clients = value
