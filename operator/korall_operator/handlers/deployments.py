"""Status follows the child Deployment: every change of a korall-managed Deployment updates its parent.

A raw watch-event handler (no state, no finalizer, no annotations written on the Deployment): it reads the
parent fresh, computes the status with status.followed_status() and writes it with the parent's
resourceVersion as a precondition, so a concurrent write by the reconcile handler is never overwritten with a
stale view (on 409 it reads again). It writes nothing when nothing changed, so a status write never loops.

A child deleted while its parent lives is applied again (the parent is poked, see `_heal`): the operator owns
its children's existence as well as their spec.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, cast

import kopf

from korall_operator import status as st
from korall_operator.handlers._common import API, PLURALS, RECONCILE_REQUESTED, state, write_status
from korall_operator.k8s import Conflict, KubeClient, NotFound
from korall_operator.manifests import MANAGED_BY


def _controller(body: kopf.Body) -> dict[str, Any] | None:
    """The korall CR that controls this Deployment (its controller ownerReference), if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("apiVersion") == API and ref.get("kind") in PLURALS:
            return dict(ref)
    return None


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def follow_deployment(
    type: str, body: kopf.Body, namespace: str | None, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    owner = _controller(body)
    if owner is None or namespace is None:
        return
    korall = state(memo)
    plural = PLURALS[owner["kind"]]
    if type == "DELETED":
        await _heal(korall.kube, plural, namespace, owner, str(body.get("metadata", {}).get("uid", "")))
        return
    noun = "model" if owner["kind"] == "InferenceModel" else "capture"

    async def status_of(parent: Mapping[str, Any]) -> dict[str, Any] | None:
        return st.followed_status(parent.get("status") or {}, body, noun=noun)

    try:
        written = await write_status(korall.kube, plural, namespace, owner["name"], owner.get("uid", ""), status_of)
    except Conflict:
        logger.debug(f"status of {owner['kind']} {owner['name']} kept changing; the next Deployment event updates it")
        return
    if written is not None:
        parent, fields = written
        _announce(parent, parent.get("status") or {}, fields)


async def _heal(kube: KubeClient, plural: str, namespace: str, owner: dict[str, Any], child_uid: str) -> None:
    """A child Deployment was deleted while its parent lives (by hand, or a stray `kubectl delete`): poke the
    parent so that its update handler applies the child again. When the parent itself is being deleted (the
    garbage collector's cascade), it is gone or marked, and nothing happens. Nor when its current spec asks for no
    child (the operator deleted it: a profile that stopped being audio; or a spec failure): a reconcile would
    apply nothing."""
    parent = await kube.get(API, plural, namespace, owner["name"])
    meta = (parent or {}).get("metadata") or {}
    if parent is None or meta.get("uid") != owner.get("uid") or meta.get("deletionTimestamp"):
        return
    status = parent.get("status") or {}
    if status.get("observedGeneration") == meta.get("generation") and not status.get("specHash"):
        return
    with contextlib.suppress(NotFound):
        await kube.merge_patch(
            API, plural, namespace, owner["name"], {"metadata": {"annotations": {RECONCILE_REQUESTED: child_uid}}}
        )


def _announce(parent: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """Events on transitions only: a rollout that completed, a rollout that failed."""
    obj = kopf.Body(cast(kopf.RawBody, parent))
    was = {c["type"]: c for c in before.get("conditions") or []}
    now = {c["type"]: c for c in after.get("conditions") or []}
    ready, degraded = now.get(st.READY, {}), now.get(st.DEGRADED, {})
    if ready.get("status") == "True" and was.get(st.READY, {}).get("status") != "True":
        kopf.event(obj, type="Normal", reason="RolloutComplete", message=ready.get("message", ""))
    if degraded.get("status") == "True" and was.get(st.DEGRADED, {}).get("status") != "True":
        kopf.event(obj, type="Warning", reason=degraded.get("reason", "Degraded"), message=degraded.get("message", ""))
