"""The resync loop: every `resync_interval_s`, every parent is compared with what the indexes say, and what drifted
is put right. It is what makes the operator level-triggered.

Watch events are the fast path, and any one of them can be lost for good: an API call that failed while handling
it, an operator restart between an event and its write. controller-runtime answers that with a periodic resync of
its informer cache; this is the same, over kopf's indexes: one task for the whole operator, in memory, with an API
call only for a parent that drifted (follow.drift). Per-object kopf timers would do the same with one task and
one INFO log line per object and interval.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from korall_operator.handlers._common import State
from korall_operator.handlers.follow import Drift, drift, refresh_status, request_reconcile
from korall_operator.handlers.indexes import Indexes, ParentView
from korall_operator.k8s import ApiError

logger = logging.getLogger("korall.resync")


async def resync_forever(korall: State, indexes: Indexes) -> None:
    while True:
        await asyncio.sleep(korall.settings.resync_interval_s)
        try:
            counts = await resync_once(korall, indexes)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one bad round end the loop
            logger.exception("resync round failed; the next round tries again")
        else:
            if any(counts.values()):
                logger.info(f"resync: {counts[Drift.RECONCILE]} reconciled, {counts[Drift.STATUS]} statuses updated")


async def resync_once(korall: State, indexes: Indexes) -> dict[Drift, int]:
    """One pass over every parent; returns how many needed what."""
    counts = dict.fromkeys(Drift, 0)
    views: list[ParentView] = [v for idx in (indexes.models, indexes.profiles) for store in idx.values() for v in store]
    for view in views:
        found = drift(view, indexes)
        if found is None:
            continue
        counts[found] += 1
        try:
            if found is Drift.RECONCILE:
                await request_reconcile(korall, view)
            else:
                await refresh_status(korall, indexes, view.kind, view.namespace, view.name)
        except (ApiError, aiohttp.ClientError) as e:
            logger.warning(f"resync of {view.kind} {view.namespace}/{view.name} failed ({e}); next round retries")
        await asyncio.sleep(0)  # let the watch handlers in between parents
    return counts
