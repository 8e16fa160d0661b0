"""The parent's status follows its children: every change of a korall-managed Deployment or Pod updates it, and a
deleted child Service is applied again.

Raw watch-event handlers (no state, no finalizer, nothing written on the children). They only say *which* parent
to look at; follow.heal_or_refresh, which the resync loop shares, decides from the indexes what to do. So no single
event decides the outcome: an event whose status write failed is made good by the next event of that parent or, at
the latest, by the resync loop (handlers/resync.py). A child deleted while its parent wants it is applied again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from korall_operator.handlers._common import API, PLURALS, deleted, state
from korall_operator.handlers.follow import heal_or_refresh
from korall_operator.handlers.indexes import MANAGED, Indexes
from korall_operator.k8s import ApiError
from korall_operator.observed import child_key

ParentRef = tuple[str, str, str]  # kind, namespace, name


def parent_of_child(body: Mapping[str, Any]) -> ParentRef | None:
    """The korall CR that controls this Deployment or Service (its controller ownerReference), if any."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("apiVersion") == API and ref.get("kind") in PLURALS:
            return str(ref["kind"]), str(meta.get("namespace", "")), str(ref["name"])
    return None


def parent_of_pod(body: Mapping[str, Any], indexes: Indexes) -> ParentRef | None:
    """A Pod's parent, through the Deployment of the same parent key (a Pod's own owner is a ReplicaSet)."""
    key = child_key(body)
    deployment = indexes.deployments.get(key) if key is not None else None
    for slim in deployment or []:
        owner = slim["metadata"].get("owner") or {}
        if owner.get("kind") in PLURALS and owner.get("name"):
            return str(owner["kind"]), key[0] if key else "", str(owner["name"])
    return None


async def _follow(memo: Any, parent: ParentRef | None, kwargs: dict[str, Any], logger: kopf.Logger) -> None:
    if parent is None:
        return
    try:
        await heal_or_refresh(state(memo), Indexes.of(kwargs), *parent)
    except (ApiError, aiohttp.ClientError) as e:  # the next event, or the resync loop, makes it good
        logger.debug(f"status of {parent[0]} {parent[2]} not updated ({type(e).__name__}); the resync repeats it")


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(body: kopf.Body, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    await _follow(memo, parent_of_child(body), kwargs, logger)


@kopf.on.event("", "v1", "services", labels=MANAGED, when=deleted)
async def service_deleted(body: kopf.Body, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    """Only a deletion matters (nothing of a Service shows in the status). A Service whose labels someone changed
    leaves the watch's label selector: the API server reports that as a deletion too, and the apply puts them back."""
    await _follow(memo, parent_of_child(body), kwargs, logger)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_changed(body: kopf.Body, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    await _follow(memo, parent_of_pod(body, Indexes.of(kwargs)), kwargs, logger)
