"""Rate limits per client address and per token, with the `limits` library's moving window, in memory.

A moving window counts the requests of the last second (or minute...) at every request, so a client cannot burst
twice the limit across a window boundary as with fixed windows. The counters live in this process (one pod serves
its own clients; no shared store to run or reach). A refused request gets 429 `rate_limited` with Retry-After:
the seconds until the oldest counted request leaves the window.

Memory: the storage keeps one timestamp per counted request for the length of the window, so it is bounded by the
request rate the server can take times the longest window, whatever the number of client addresses; keys expire
with their window. Cost: a few microseconds per limit per request.

The storage is limits' own MemoryStorage with two changes: it expires old entries inline, at most once a second,
instead of starting a `threading.Timer` thread whenever the previous one has ended, which it does every 10 ms
under load, so on most requests: a thread start and a thread's wake-up competing for the GIL and the cores on the
path of every /infer (found profiling the concurrency-1 overhead, issue 15); and it forgets a key whose entries
have all expired, which limits' own keeps for ever.
"""

from __future__ import annotations

import time

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

EXPIRE_EVERY_S = 1.0


class InlineExpiryStorage(MemoryStorage):
    """limits' in-memory storage without its expiry thread (see the module docstring). Single-threaded use: the
    guard calls it from the event loop only."""

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()  # the one MemoryStorage starts in __init__; gone before the first request
        self.timer.join()
        self._next_expiry = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # overrides MemoryStorage's name-mangled private method
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRE_EVERY_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
            # limits leaves a key with no entry left in place: without this, every client address ever seen
            # would keep one (a client spraying addresses, IPv6, would grow it without end)
            for key in [key for key, entries in self.events.items() if not entries]:
                del self.events[key]


class RateLimits:
    """The limits of one service: `retry_after(kind, key)` counts one request and says whether it is over."""

    def __init__(self, per_client: list[RateLimitItem], per_token: list[RateLimitItem]) -> None:
        self.storage = InlineExpiryStorage()
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._items = {"client": per_client, "token": per_token}
        self.per_client = bool(per_client)
        self.per_token = bool(per_token)

    def retry_after(self, kind: str, key: str) -> float | None:
        """Count one request of `key` (a client address or a token name) against the `kind` limits; None when it
        fits, else the seconds until it would (the request is then not counted against the later limits)."""
        for item in self._items[kind]:
            # MovingWindowRateLimiter.hit(item, kind, key), inlined: its error wrapper is for remote storages and
            # cost more than the count itself (5.6 against 2.3 us per limit, on every request)
            if not self.storage.acquire_entry(item.key_for(kind, key), item.amount, item.get_expiry()):
                stats = self._limiter.get_window_stats(item, kind, key)
                return max(0.0, stats.reset_time - time.time())
        return None
