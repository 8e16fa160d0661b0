"""Kubernetes Events the operator posts about its resources, aggregated: one Event per object, type and reason,
whose `count` goes up when it happens again (what `kubectl get events` shows as "x12"), never one more object.

kopf's own posting creates a new Event every time, so a crash loop reported on every transition would flood
`kubectl get events`; client-go's EventCorrelator aggregates the same way as here. The Event's name is derived from
the object's uid, the type and the reason, so aggregation survives an operator restart: the existing Event is
read and its count raised. Posting never fails a handler: a refused or failed post is logged and dropped.
"""

from __future__ import annotations

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
    def __init__(self, kube: KubeClient, instance: str = COMPONENT) -> None:
        self._kube = kube
        self._instance = instance

    async def record(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post (or count again) the Event `reason` of `involved` (a body with apiVersion, kind and metadata)."""
        try:
            await self._record(involved, type_, reason, message[:MAX_MESSAGE])
        except (ApiError, aiohttp.ClientError) as e:
            logger.warning(f"Event {reason} of {involved.get('kind')} not posted: {e}")

    async def _record(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = involved.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), event_name(involved, type_, reason)
        for _ in range(3):
            existing = await self._kube.get("v1", "events", namespace, name)
            now = _now()
            if existing is not None:
                patch = {
                    "metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]},
                    "count": int(existing.get("count") or 1) + 1,
                    "lastTimestamp": now,
                    "message": message,
                }
                try:
                    await self._kube.merge_patch("v1", "events", namespace, name, patch)
                    return
                except (Conflict, NotFound):
                    continue
            body = {
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
            try:
                await self._kube.create("v1", "events", namespace, body)
                return
            except Conflict:  # created meanwhile (409 AlreadyExists): count it instead
                continue
