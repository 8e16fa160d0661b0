"""Fan-out from a worker thread to live-stream clients without letting a slow client hold anything up.

A thread publishes (the camera's inference worker, the audio capture thread); every subscriber (an SSE response
on the event loop) owns a small asyncio queue. Publishing hands the item to each subscriber's loop with
`call_soon_threadsafe`; a full queue loses its oldest item (counted per client, and reported to `on_drop`), so a
client that reads slowly sees fresh items with gaps, and never blocks the publisher or the other clients.
`close` (on shutdown: `end_streams_on_exit_signals`) hands every subscriber None, the end of its stream.

Places are bounded twice: `max_clients` in all, and `max_per_client` per client address, so that one host cannot
take every place. A client that takes a place and never reads is dropped by the HTTP server once its reply stays
unread for HTTP_SEND_TIMEOUT_S (`common.server`), which ends its stream and frees its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from korall_workloads.common.errors import Unavailable

STREAM_RETRY_AFTER_S = 5
"""Retry-After of a stream refused for want of room: a place frees when a stream ends or a reader is dropped."""


class TooManyClients(Unavailable):
    """Every place for a live-stream client is taken; the client should reconnect later."""

    code = "too_many_clients"


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop
    client: str | None = None
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
        self,
        queue_size: int = 8,
        *,
        max_clients: int | None = None,
        max_per_client: int | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.max_per_client = max_per_client
        self._on_drop = on_drop
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def refusal(self, client: str | None = None) -> str | None:
        """Why one more subscriber (from `client`) would be refused now, or None when there is room."""
        with self._lock:
            return self._refusal(client)

    def _refusal(self, client: str | None) -> str | None:
        if self.max_clients is not None and len(self._subs) >= self.max_clients:
            return f"too many live clients (max {self.max_clients})"
        if client is not None and self.max_per_client is not None:
            held = sum(1 for sub in self._subs if sub.client == client)
            if held >= self.max_per_client:
                return f"{client} already holds {held} live streams (max {self.max_per_client} per client)"
        return None

    def require_room(self, client: str | None = None) -> None:
        """Raise TooManyClients when one more subscriber (from `client`) would be refused."""
        if (why := self.refusal(client)) is not None:
            raise TooManyClients(f"{why}; reconnect later", retry_after_s=STREAM_RETRY_AFTER_S)

    def join(self, wants: Callable[[Any], bool] | None = None, client: str | None = None) -> Subscription:
        """`subscribe`, raising TooManyClients (with the reason) when there is no room."""
        sub = self._new(wants, client)
        with self._lock:
            if (why := self._refusal(client)) is not None:
                raise TooManyClients(f"{why}; reconnect later", retry_after_s=STREAM_RETRY_AFTER_S)
            self._subs.add(sub)
        return sub

    def subscribe(self, wants: Callable[[Any], bool] | None = None, client: str | None = None) -> Subscription | None:
        """Call from a coroutine: the subscription delivers on the running loop; None when there is no room."""
        sub = self._new(wants, client)
        with self._lock:
            if self._refusal(client) is not None:
                return None
            self._subs.add(sub)
        return sub

    def _new(self, wants: Callable[[Any], bool] | None, client: str | None) -> Subscription:
        loop = asyncio.get_running_loop()
        return Subscription(asyncio.Queue(self.queue_size), loop, client=client, wants=wants, on_drop=self._on_drop)

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


def end_streams_on_exit_signals(end_streams: Callable[[], None]) -> Callable[[], None]:
    """On SIGINT/SIGTERM, end the live streams (`end_streams`, e.g. `Broadcaster.close`), then let the server's
    own handler run; returns the function that puts the previous handlers back. Call it on the server's loop.

    uvicorn waits for open responses to finish before it runs the lifespan shutdown, and a live stream never
    finishes by itself: without this, every connected SSE client would hold shutdown up to
    `timeout_graceful_shutdown` (forever by default, until Kubernetes kills the pod). `end_streams` runs as a
    loop callback, not inside the signal handler, which may have interrupted the loop thread while it held the
    broadcaster's lock. Signal handlers can only be set on the main thread (uvicorn.run); elsewhere (a server in
    a test thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):  # nobody handles it gracefully: leave the default behaviour alone
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is streaming any more
                loop.call_soon_threadsafe(end_streams)
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def restore() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return restore
