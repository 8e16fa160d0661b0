"""The s3 link renewal task (handlers/model_links.py) on its own: what it makes of a status it cannot read, a round
that fails, and the reuse of a fresh link by the same rule (link_reuse.py). The end-to-end renewal and reuse (moto's
S3, the operator, both cluster tiers) are in test_model_delivery and test_catalog_s3."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from korall_operator.handlers.model_links import keep_links_fresh, renewal_in
from korall_operator.link_reuse import IssuedLinks, LinkSource
from korall_operator.presign import PresignedLink, S3Credentials

NOW = 1_800_000_000.0


def test_the_renewal_time_is_half_the_lifetime_and_none_for_a_stamp_that_is_not_one() -> None:
    link = {"issuedAt": "2027-01-15T08:00:00Z", "expiresAt": "2027-01-15T08:10:00Z"}
    issued = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert renewal_in({"modelLink": link}, issued) == 300.0
    for broken in ({"issuedAt": "yesterday"}, {"issuedAt": 12, "expiresAt": None}, None, {}):
        assert renewal_in({"modelLink": broken}, NOW) is None  # nothing to renew, and nothing raised


def test_a_link_is_reused_for_its_model_and_source_until_the_renewal_would_sign_it_again() -> None:
    link = {"issuedAt": "2027-01-15T08:00:00Z", "expiresAt": "2027-01-15T08:10:00Z"}
    signed = PresignedLink(url="https://store/m?X-Amz-Signature=1", issued_at=NOW, expires_at=NOW + 600)
    keys = S3Credentials("key", "secret")
    source = LinkSource("s3://models/a.tflite", "korall-system/korall-s3", keys)
    links = IssuedLinks()
    links.remember(("ns", "m"), "uid-1", source, signed, NOW)
    due = NOW + renewal_in({"modelLink": link}, NOW)  # type: ignore[operator]  # the renewal task's moment
    assert links.reusable(("ns", "m"), "uid-1", source, due - 1) is signed
    assert links.reusable(("ns", "m"), "uid-1", source, due) is None  # the renewal's rule, not another one
    for other in (
        LinkSource("s3://models/b.tflite", source.secret, keys),
        LinkSource(source.uri, "korall-system/other", keys),
        LinkSource(source.uri, source.secret, S3Credentials("key", "rotated")),
        LinkSource(source.uri, source.secret, S3Credentials("key", "secret", region="eu-west-1")),
    ):
        assert links.reusable(("ns", "m"), "uid-1", other, NOW) is None, other
    assert links.reusable(("ns", "m"), "uid-2", source, NOW) is None  # deleted and made again under that name
    assert links.reusable(("ns", "other"), "uid-1", source, NOW) is None

    later = PresignedLink(url="https://store/n", issued_at=due, expires_at=due + 600)
    links.remember(("ns", "n"), "uid-3", source, later, due)  # drops what can no longer be reused
    assert links.reusable(("ns", "m"), "uid-1", source, NOW) is None
    links.forget(("ns", "n"))  # the model left S3
    assert links.reusable(("ns", "n"), "uid-3", source, due) is None


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
