"""The rate limits' moving window, in this process's memory, without limits' expiry thread (common/ratelimit.py)."""

from __future__ import annotations

import threading
import time

from korall_workloads.common.ratelimit import EXPIRE_EVERY_S, RateLimits
from limits import parse_many


def test_a_moving_window_counts_per_key_and_says_when_to_retry() -> None:
    limits = RateLimits(parse_many("5/second"), parse_many("2/second"))
    assert [limits.retry_after("client", "10.0.0.1") for _ in range(5)] == [None] * 5
    wait = limits.retry_after("client", "10.0.0.1")
    assert wait is not None and 0 < wait <= 1.0
    assert limits.retry_after("client", "10.0.0.2") is None  # another address, another count
    assert limits.retry_after("token", "ci") is None and limits.retry_after("token", "ci") is None
    assert limits.retry_after("token", "ci") is not None
    time.sleep(1.05)
    assert limits.retry_after("client", "10.0.0.1") is None  # the window moved on


def test_counting_starts_no_thread_and_old_entries_are_dropped() -> None:
    """limits' own MemoryStorage starts a threading.Timer whenever the previous one ended (every 10 ms under
    load); this one expires inline, at most once a second, so the memory stays bounded without a thread."""
    before = {t.ident for t in threading.enumerate()}
    limits = RateLimits(parse_many("100/second"), [])
    for i in range(300):
        limits.retry_after("client", f"10.0.{i // 100}.{i % 100}")
    assert {t.ident for t in threading.enumerate()} <= before
    assert len(limits.storage.events) == 300
    time.sleep(max(EXPIRE_EVERY_S, 1.0) + 0.05)
    limits.retry_after("client", "10.9.9.9")  # a request after the window: the old entries go
    assert set(limits.storage.events) <= {"LIMITER/client/10.9.9.9/100/1/second"}
