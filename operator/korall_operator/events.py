"""Kubernetes Events the operator posts about its resources, aggregated: one Event per object, type and reason,
whose `count` goes up when it happens again (what `kubectl get events` shows as "x12"), never one more object.

kopf's own posting creates a new Event every time, so a crash loop reported on every transition would flood
`kubectl get events`; client-go's EventCorrelator aggregates the same way as here. The Event's name is derived from
the object's uid, the type and the reason, so aggregation survives an operator restart: the existing Event is
read and its count raised. Posting never fails a handler: a refused or failed post is logged and dropped.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from korall_operator.k8s import ApiError, Conflict, KubeClient, NotFound

COMPONENT = "korall-operator"
MAX_MESSAGE = 1024
logger = logging.getLogger("korall.events")


def event_name(involved: Mapping[str, Any], type_: str, reason: str) -> str:
    """`<object name>.<digest>`: one name per (object uid, type, reason), as short as a name must be."""
    meta = involved.get("metadata") or {}
    digest = hashlib.sha256(f"{meta.get('uid')}/{type_}/{reason}".encode()).hexdigest()[:12]
    return f"{str(meta.get('name', 'object'))[:240]}.{digest}"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Posts Events; remembers the count of the ones it posted (the operator is their only writer), so counting
    one again is a single PATCH. After a restart the first one of each is read back."""

    def __init__(self, kube: KubeClient, instance: str = COMPONENT, remembered: int = 10_000) -> None:
        self._kube = kube
        self._instance = instance
        self._counts: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
        self._remembered = remembered

    async def record(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post (or count again) the Event `reason` of `involved` (a body with apiVersion, kind and metadata)."""
        try:
            await self._record(involved, type_, reason, message[:MAX_MESSAGE])
        except (ApiError, aiohttp.ClientError) as e:
            logger.warning(f"Event {reason} of {involved.get('kind')} not posted: {e}")

    async def _record(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = involved.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), event_name(involved, type_, reason)
        key = (namespace, name)
        for _ in range(3):
            count = self._counts.get(key)
            if count is None:
                try:
                    await self._kube.create(
                        "v1", "events", namespace, self._body(involved, namespace, name, type_, reason, message)
                    )
                    self._remember(key, 1)
                    return
                except Conflict:  # posted before this operator started: read its count
                    existing = await self._kube.get("v1", "events", namespace, name)
                    self._remember(key, int((existing or {}).get("count") or 1))
                    continue
            patch = {"count": count + 1, "lastTimestamp": _now(), "message": message}
            try:
                await self._kube.merge_patch("v1", "events", namespace, name, patch)
            except NotFound:  # expired (the API server keeps Events for an hour): post it anew
                self._counts.pop(key, None)
                continue
            self._remember(key, count + 1)
            return

    def _remember(self, key: tuple[str, str], count: int) -> None:
        self._counts[key] = count
        self._counts.move_to_end(key)
        while len(self._counts) > self._remembered:
            self._counts.popitem(last=False)

    def _body(
        self, involved: Mapping[str, Any], namespace: str, name: str, type_: str, reason: str, message: str
    ) -> dict[str, Any]:
        meta = involved.get("metadata") or {}
        now = _now()
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }
