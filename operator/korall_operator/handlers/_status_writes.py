"""How the operator writes the status of its custom resources: one writer at a time per parent, preconditioned on
the parent's resourceVersion, retried with a short backoff.

Several handlers write a parent's status: the reconcile handler after it applied the children, the child watchers
(a Deployment or a Pod changed) and the resync loop. kopf runs them concurrently, and a status computed from an
older view must never land over a newer one. So:

- writes of one parent are serialized in this process (`StatusWriters.exclusive`), and each computes its status
  from a fresh read of the parent inside that section;
- a follow-up that finds another follow-up of the same parent already queued is dropped
  (`StatusWriters.follow_up`): the queued one reads the indexes after it gets its turn and sees the newer state,
  so a burst of Pod and Deployment events costs one write, not one per event;
- each write carries the resourceVersion it was computed from; a 409 means someone else wrote the object (kopf's
  own annotations, a user), and the write is computed again after a short, growing, jittered pause. It gives up
  only after `STATUS_ATTEMPTS` (a few seconds), which an operator that alone writes statuses never reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any

from korall_operator.catalog.records import slim_status
from korall_operator.k8s import Conflict, KubeClient, NotFound

STATUS_ATTEMPTS = 8
"""Reads of the parent before a conditional status write gives up (backoff 0.05 s doubling, about 6 s in all)."""

FIRST_BACKOFF_S = 0.05

StatusOf = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any] | None]]


class StatusWriters:
    """Per-parent mutual exclusion of the operator's status writes, and coalescing of follow-ups."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}  # holders and waiters of each lock: it is dropped when none is left
        self._queued: set[Hashable] = set()
        self.written: dict[Hashable, dict[str, Any]] = {}
        """The status each parent got from this operator's last write: with the one kopf's watch last delivered,
        it tells a follow-up that there is nothing to write, without reading the parent."""

    def remember(self, key: Hashable, before: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        """Record a write of `fields` (a merge patch) over `before` (slimmed as the indexes keep a status: the
        follow-ups compare rollout fields, never the catalog's history)."""
        merged = {**before, **fields}
        self.written[key] = slim_status({k: v for k, v in merged.items() if v is not None})

    def forget(self, key: Hashable) -> None:
        """The parent is gone."""
        self.written.pop(key, None)

    @contextlib.asynccontextmanager
    async def exclusive(self, key: Hashable) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            # Counted, not `lock.locked()`: a released lock reads unlocked while the waiter it woke has not run
            # yet, and a lock dropped then would let a newcomer take a fresh one and write alongside that waiter.
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                self._locks.pop(key, None)

    async def follow_up(self, key: Hashable, write: Callable[[], Awaitable[Any]]) -> None:
        """Run `write` under the parent's lock, unless a follow-up of that parent is already waiting for it."""
        if key in self._queued:
            return
        self._queued.add(key)
        try:
            async with self.exclusive(key):
                self._queued.discard(key)  # from here on, a newer change queues a new follow-up
                await write()
        finally:
            self._queued.discard(key)


def replacing(old: Any, new: Any) -> Any:
    """The merge-patch value that makes a field that is `old` exactly `new`. A JSON merge patch (RFC 7396) merges
    objects: a key the new value leaves out would stay, so a record written whole (the catalog's `serving`, with the
    spec of the model it serves) would keep the keys of the one before it (a `file` beside the new `url`). Every key
    of `old` that `new` has not is sent as null; lists and scalars replace as they are."""
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return new
    patch = {key: replacing(old.get(key), value) for key, value in new.items()}
    patch.update({key: None for key in old if key not in new})
    return patch


async def write_status(
    kube: KubeClient,
    api: str,
    plural: str,
    namespace: str,
    name: str,
    uid: str | None,
    status_of: StatusOf,
) -> tuple[Mapping[str, Any], dict[str, Any]] | None:
    """Read the parent, write `status_of(parent)` as its status on condition that it did not change meanwhile.
    Each field given is written whole (`replacing`); fields not given stay as they are.

    Returns (the parent as read, the fields written), or None when there was nothing to write or the parent is gone
    or replaced (another uid than `uid`, when given). Raises Conflict if it kept changing for STATUS_ATTEMPTS reads.
    """
    for attempt in range(STATUS_ATTEMPTS):
        if attempt:
            await asyncio.sleep(FIRST_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
        parent = await kube.get(api, plural, namespace, name)
        if parent is None or (uid is not None and parent.get("metadata", {}).get("uid") != uid):
            return None
        fields = await status_of(parent)
        if fields is None:
            return None
        version = parent["metadata"]["resourceVersion"]
        patch = {key: replacing((parent.get("status") or {}).get(key), value) for key, value in fields.items()}
        try:
            await kube.merge_patch_status(api, plural, namespace, name, patch, resource_version=version)
        except NotFound:
            return None
        except Conflict:
            continue
        return parent, fields
    raise Conflict(409, f"the status of {plural} {namespace}/{name} kept changing")
