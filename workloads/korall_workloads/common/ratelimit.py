"""Rate limits per client address and per token, with the `limits` library's moving window, in memory.

A moving window counts the requests of the last second (or minute...) at every request, so a client cannot burst
twice the limit across a window boundary as with fixed windows. The counters live in this process (one pod serves
its own clients; no shared store to run or reach). A refused request gets 429 `rate_limited` with Retry-After:
the seconds until the oldest counted request leaves the window.

Memory: the storage keeps one timestamp per counted request for the length of the window, so it is bounded by the
request rate the server can take times the longest window, whatever the number of client addresses; keys expire
with their window. Cost: a few microseconds per limit per request.
"""

from __future__ import annotations

import time

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class RateLimits:
    """The limits of one service: `retry_after(kind, key)` counts one request and says whether it is over."""

    def __init__(self, per_client: list[RateLimitItem], per_token: list[RateLimitItem]) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items = {"client": per_client, "token": per_token}
        self.per_client = bool(per_client)
        self.per_token = bool(per_token)

    def retry_after(self, kind: str, key: str) -> float | None:
        """Count one request of `key` (a client address or a token name) against the `kind` limits; None when it
        fits, else the seconds until it would (the request is then not counted against the later limits)."""
        for item in self._items[kind]:
            if not self._limiter.hit(item, kind, key):
                stats = self._limiter.get_window_stats(item, kind, key)
                return max(0.0, stats.reset_time - time.time())
        return None
