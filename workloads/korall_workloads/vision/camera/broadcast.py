"""Fan-out of results to live-stream clients without letting a slow client hold anything up.

The inference worker (a thread) publishes; every subscriber (an SSE response on the event loop) owns a
small asyncio queue. Publishing hands the item to each subscriber's loop with `call_soon_threadsafe`; a full
queue loses its oldest item (counted per client), so a client that reads slowly sees fresh results with
gaps, and never blocks the worker or the other clients.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop
    dropped: int = 0
    _closed: bool = field(default=False, repr=False)

    def offer(self, item: Any) -> None:
        """Runs on the subscriber's loop: enqueue, evicting the oldest item if the client is behind."""
        if self._closed:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class Broadcaster:
    def __init__(self, queue_size: int = 8) -> None:
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        """Call from a coroutine: the subscription delivers on the running loop."""
        sub = Subscription(asyncio.Queue(self.queue_size), asyncio.get_running_loop())
        with self._lock:
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
            try:
                sub.loop.call_soon_threadsafe(sub.offer, item)
            except RuntimeError:  # that loop is closed: the client is gone
                self.unsubscribe(sub)
