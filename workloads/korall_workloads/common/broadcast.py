"""Fan-out from a worker thread to live-stream clients without letting a slow client hold anything up.

A thread publishes (the camera's inference worker, the audio capture thread); every subscriber (an SSE response
on the event loop) owns a small asyncio queue. Publishing hands the item to each subscriber's loop with
`call_soon_threadsafe`; a full queue loses its oldest item (counted per client, and reported to `on_drop`), so a
client that reads slowly sees fresh items with gaps, and never blocks the publisher or the other clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop
    dropped: int = 0
    wants: Callable[[Any], bool] | None = field(default=None, repr=False)
    """Only items this accepts are offered (None: every item)."""
    on_drop: Callable[[], None] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def offer(self, item: Any) -> None:
        """Runs on the subscriber's loop: enqueue, evicting the oldest item if the client is behind."""
        if self._closed:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
        self.queue.put_nowait(item)


class Broadcaster:
    def __init__(
        self, queue_size: int = 8, *, max_clients: int | None = None, on_drop: Callable[[], None] | None = None
    ) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self._on_drop = on_drop
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self, wants: Callable[[Any], bool] | None = None) -> Subscription | None:
        """Call from a coroutine: the subscription delivers on the running loop; None when `max_clients` listen."""
        sub = Subscription(
            asyncio.Queue(self.queue_size), asyncio.get_running_loop(), wants=wants, on_drop=self._on_drop
        )
        with self._lock:
            if self.max_clients is not None and len(self._subs) >= self.max_clients:
                return None
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub._closed = True
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """Tell every subscriber that no more items will come (they receive None)."""
        self.publish(None)

    def publish(self, item: Any) -> None:
        """Thread-safe and non-blocking."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if item is not None and sub.wants is not None and not sub.wants(item):
                continue
            try:
                sub.loop.call_soon_threadsafe(sub.offer, item)
            except RuntimeError:  # that loop is closed: the client is gone
                self.unsubscribe(sub)
