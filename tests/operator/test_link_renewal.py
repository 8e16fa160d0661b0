"""The s3 link renewal task (handlers/model_links.py) on its own: what it makes of a status it cannot read, and a
round that fails. The end-to-end renewal (moto's S3, the operator, both cluster tiers) is in test_model_delivery."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from korall_operator.handlers.model_links import keep_links_fresh, renewal_in

NOW = 1_800_000_000.0


def test_the_renewal_time_is_half_the_lifetime_and_none_for_a_stamp_that_is_not_one() -> None:
    link = {"issuedAt": "2027-01-15T08:00:00Z", "expiresAt": "2027-01-15T08:10:00Z"}
    issued = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert renewal_in({"modelLink": link}, issued) == 300.0
    for broken in ({"issuedAt": "yesterday"}, {"issuedAt": 12, "expiresAt": None}, None, {}):
        assert renewal_in({"modelLink": broken}, NOW) is None  # nothing to renew, and nothing raised


class _FailingOnce:
    """An index that raises on its first read, as a round did when the API server timed out under it (injected:
    the loop's guard is what is tested, whatever the failure)."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def models(self) -> dict[Any, Any]:
        self.reads += 1
        if self.reads == 1:
            raise TimeoutError("injected: a round that fails")
        return {}


async def test_a_failed_round_does_not_end_the_renewals(caplog: pytest.LogCaptureFixture) -> None:
    korall = SimpleNamespace(settings=SimpleNamespace(link_retry_s=0.01, link_ttl_s=600))
    indexes = _FailingOnce()
    with caplog.at_level(logging.ERROR, logger="korall"):
        task = asyncio.create_task(keep_links_fresh(korall, indexes))  # type: ignore[arg-type]
        for _ in range(200):
            await asyncio.sleep(0.01)
            if indexes.reads >= 3:
                break
        alive = not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert alive and indexes.reads >= 3
    assert any("renewal round failed" in r.getMessage() for r in caplog.records)
