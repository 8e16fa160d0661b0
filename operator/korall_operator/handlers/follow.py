"""One parent, brought in line with what the indexes say: its status follows its children, a missing child or a
changed CaptureProfile gets the parent reconciled again.

Shared by the child watchers (children.py: a Deployment, Service or Pod changed) and the resync loop (resync.py: every
parent, periodically), so the outcome never depends on one watch event: whatever an event handler failed to do,
the loop finds as drift and does. `drift()` is pure and decides; the rest does what it says.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from korall_operator import status as st
from korall_operator.catalog import Promotion, attention
from korall_operator.catalog.records import records
from korall_operator.handlers._common import API, NOUNS, PLURALS, RECONCILE_REQUESTED, State
from korall_operator.handlers._status_writes import write_status
from korall_operator.handlers.indexes import Indexes, ParentView
from korall_operator.k8s import ApiError, NotFound
from korall_operator.observed import slim_deployment


class Drift(enum.Enum):
    RECONCILE = "reconcile"  # a child is missing, the CaptureProfile changed, the catalog's gate must run again
    STATUS = "status"  # the status does not say what the children do


def capture_profile_seen(profile: ParentView | None) -> dict[str, Any] | None:
    """How a model's status records the CaptureProfile it was last reconciled with (None: it did not exist)."""
    if profile is None or profile.deleting:
        return None
    return {"name": profile.name, "uid": profile.uid, "generation": profile.generation}


def drift(view: ParentView, indexes: Indexes) -> Drift | None:
    """What is out of line for this parent, or None. A parent whose current generation a handler has not
    finished yet (or that is being deleted) is left to that handler."""
    status = view.status
    if view.deleting or status.get("observedGeneration") != view.generation:
        return None
    if view.kind == "InferenceModel" and view.capture_profile:
        profile = indexes.parent("CaptureProfile", view.namespace, view.capture_profile)
        if capture_profile_seen(profile) != status.get("captureProfile"):
            return Drift.RECONCILE
    # A spec that failed before the catalog's gate waits for a change of itself or of its CaptureProfile (above):
    # nothing the catalog has pending can move it, and asking would warn again (status.waits_for_spec_change).
    if view.kind == "InferenceModel" and status.get("catalog") and not st.waits_for_spec_change(status):
        approvals = indexes.approvals_of(view.namespace, view.name)
        if attention(status, approvals, time.time()):
            return Drift.RECONCILE  # a rollout ended or ran out of time, a validation ended, an approval came
        now = time.time()
        for record in records(status):
            if record.state == "Running" and (
                indexes.validation_outcome(view.namespace, record.job, record.job_uid)
                or indexes.validation_job_gone(view.namespace, record, now)
            ):
                return Drift.RECONCILE  # a validation ended, or its Job is gone, unrecorded: the reconcile writes it
    deployment, problem = indexes.children(view.kind, view.namespace, view.name)
    if status.get("specHash"):  # the spec asks for children: a Deployment and its Service
        if deployment is None or not indexes.has_service(view.kind, view.namespace, view.name):
            return Drift.RECONCILE
        if st.followed_status(status, deployment, NOUNS[view.kind], problem) is not None:
            return Drift.STATUS
    if view.kind == "CaptureProfile" and (status.get("usedBy") or []) != indexes.used_by(view.namespace, view.name):
        return Drift.STATUS
    return None


async def heal_or_refresh(korall: State, indexes: Indexes, kind: str, namespace: str, name: str) -> None:
    """After a child changed: reconcile the parent if it needs it, else refresh its status from a fresh read."""
    view = indexes.parent(kind, namespace, name)
    if view is None:
        return
    if drift(view, indexes) is Drift.RECONCILE:
        await request_reconcile(korall, view)
    else:
        await refresh_status(korall, indexes, kind, namespace, name)


async def request_reconcile(korall: State, view: ParentView) -> None:
    """Have kopf run the parent's update handler (with kopf's retries): a change of one of its annotations."""
    stamp = datetime.datetime.now(tz=datetime.UTC).isoformat()
    patch = {"metadata": {"annotations": {RECONCILE_REQUESTED: stamp}}}
    with contextlib.suppress(NotFound):  # deleted meanwhile: nothing to reconcile
        await korall.kube.merge_patch(API, PLURALS[view.kind], view.namespace, view.name, patch)


async def refresh_status(korall: State, indexes: Indexes, kind: str, namespace: str, name: str) -> None:
    """Bring the parent's status in line with its children as the indexes know them; write only on a change.

    Costs no API call when the status the operator last wrote and the one its watch last saw both say it already
    (most Pod and Deployment events change nothing the status shows). Otherwise coalesced per parent
    (StatusWriters.follow_up), from a fresh read. Announces transitions with Events.
    """
    key = (kind, namespace, name)

    def fields_for(previous: Mapping[str, Any]) -> dict[str, Any] | None:
        fields: dict[str, Any] = {}
        deployment, problem = indexes.children(kind, namespace, name)
        if deployment is not None:
            fields.update(st.followed_status(previous, deployment, NOUNS[kind], problem) or {})
        if kind == "CaptureProfile":
            used = indexes.used_by(namespace, name)
            if (previous.get("usedBy") or []) != used:
                fields["usedBy"] = used
        return fields or None

    view = indexes.parent(kind, namespace, name)
    if view is not None and fields_for(view.status) is None:
        written = korall.writers.written.get(key)
        if written is None or fields_for(written) is None:
            return

    async def status_of(parent: Mapping[str, Any]) -> dict[str, Any] | None:
        return fields_for(parent.get("status") or {})

    async def write() -> None:
        result = await write_status(korall.kube, API, PLURALS[kind], namespace, name, None, status_of)
        if result is not None:
            parent, fields = result
            korall.writers.remember(key, parent.get("status") or {}, fields)
            await announce(korall, parent, parent.get("status") or {}, fields)

    await korall.writers.follow_up(key, write)


async def announce(
    korall: State, parent: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """Events on transitions only: a rollout that completed; a rollout or a pod that failed (or failed anew)."""
    was = {c["type"]: c for c in before.get("conditions") or []}
    now = {c["type"]: c for c in after.get("conditions") or []}
    ready, degraded = now.get(st.READY, {}), now.get(st.DEGRADED, {})
    if ready.get("status") == "True" and was.get(st.READY, {}).get("status") != "True":
        await korall.events.record(parent, "Normal", "RolloutComplete", ready.get("message", ""))
    old = was.get(st.DEGRADED, {})
    anew = old.get("status") != "True" or old.get("reason") != degraded.get("reason")
    if degraded.get("status") == "True" and anew:
        await korall.events.record(parent, "Warning", degraded.get("reason", "Degraded"), degraded.get("message", ""))


async def write_reconciled_status(
    korall: State,
    indexes: Indexes,
    body: kopf.Body,
    kind: str,
    *,
    generation: int,
    expected_hash: str,
    applied: Mapping[str, Any],
    extra: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    promotion: Promotion | None = None,
) -> None:
    """The status after a reconcile applied the children (`applied`: the Deployment as the apply returned it).

    `extra`: more fields, or a function of the parent's status as freshly read that gives them (the catalog's
    append-only history must be appended to what is there); `promotion`: the catalog gate's verdict.

    Under the parent's write lock, from a fresh read of the parent; then one follow-up brings in what the
    Deployment and its pods did since. Raises kopf.TemporaryError (1 s) if the parent kept changing, or the API
    failed.
    """
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    deployment = slim_deployment(applied)
    _, problem = indexes.children(kind, namespace, name)

    async def status_of(parent: Mapping[str, Any]) -> dict[str, Any]:
        fields = st.reconciled_status(
            generation=generation,
            expected_hash=expected_hash,
            deployment=deployment,
            previous=parent.get("status") or {},
            noun=NOUNS[kind],
            problem=problem,
            promotion=promotion,
        )
        more = extra(parent.get("status") or {}) if callable(extra) else extra
        return {**fields, **(more or {})}

    try:
        async with korall.writers.exclusive((kind, namespace, name)):
            result = await write_status(
                korall.kube, API, PLURALS[kind], namespace, name, body["metadata"]["uid"], status_of
            )
            if result is not None:
                korall.writers.remember((kind, namespace, name), result[0].get("status") or {}, result[1])
        # The Deployment may have moved on while this handler ran, and its event may have been followed before the
        # write above: one more follow-up, from the indexes, brings that in (and writes nothing otherwise).
        await refresh_status(korall, indexes, kind, namespace, name)
    except (ApiError, aiohttp.ClientError) as e:  # Conflict included: it kept changing for seconds
        raise kopf.TemporaryError(f"writing the status: {e}; retrying in 1 s", delay=1) from e
