"""Validation Jobs: started for the catalog's gate, their outcome recorded in the InferenceModel's status.

`start_validation` runs in the reconcile when the gate asks for it (catalog/gate.py): links are signed first
(an s3 model, an s3 CPU twin), then the Job is created (manifests/validation.py), then its link Secret, owned by
the Job. The Job is created, never applied: a Job's pod template cannot change, and an existing Job of that name
is this very validation (the name holds the model, its validation settings and the spec generation).

The outcome comes back from the pod watch the operator has anyway: when a validation pod has ended, the
validator's JSON termination message (or the failure of an init container, or a crash) becomes the record of that
model in `status.validations`, an entry in `status.history` and an Event; then the InferenceModel is reconciled
again, so the gate sees it (unless its spec failed before the gate: that reconcile would stop there again, and
only warn again). A Job that fails with no pod to tell (its deadline) is recorded from the Job watch, and so is one
deleted before it told (an Error, ValidationJobGone; the resync loop finds one whose deletion it missed: follow.drift).
A record is written once: the first outcome of a Running record wins, later ones find nothing Running to finish.
That is also how a validation a newer spec superseded stays unrecorded: the gate's status write drops its Running
record, then `stop_superseded` deletes its Job with its pod (handlers/promotion.py).

A Job belongs to the InferenceModel that owns it (its controller ownerReference), never to another of the same name:
an InferenceModel deleted and created again at once finds its predecessor's Job under the same name until the
garbage collector removes it, and waits for that (`_own_job`) rather than take it. Likewise a record takes only the
outcome of its own Job, by uid (`jobUid`, kept when the Job is created): a pod's controlling owner must be that Job,
since a pod of the predecessor's Job can outlive it (the collector removes a Job before its pods, and a pod that is
killed ends Failed).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from korall_operator import status as st
from korall_operator.catalog import (
    ModelRef,
    Outcome,
    ValidationRecord,
    appended,
    history_entry,
    outcome_of_job,
    outcome_of_pod,
    with_record,
)
from korall_operator.catalog.records import now_iso, records
from korall_operator.handlers._common import API, INFERENCE_MODELS, RECONCILE_REQUESTED, State, state
from korall_operator.handlers._status_writes import write_status
from korall_operator.handlers.indexes import VALIDATION, Indexes
from korall_operator.handlers.model_links import link_secret, signed_link
from korall_operator.k8s import ApiError, Conflict, NotFound
from korall_operator.manifests import LINK_KEY
from korall_operator.manifests.validation import (
    JOB_ANNOTATION,
    MODEL_NAME_ANNOTATION,
    SHA256_ANNOTATION,
    build_validation_job,
    validation_job_name,
    validation_link_secret,
)
from korall_operator.specs import InferenceModelSpec, SpecError

EVENT_OF = {
    "Passed": ("Normal", "ValidationPassed"),
    "Failed": ("Warning", "ValidationFailed"),
    "Error": ("Warning", "ValidationError"),
}


async def start_validation(
    korall: State, body: Mapping[str, Any], model: InferenceModelSpec, sha256: str, config: str, generation: int
) -> ValidationRecord:
    """Create the validation Job of the spec's model (and its link Secret); returns its Running record."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    job_name = validation_job_name(name, sha256, config, generation)
    links: dict[str, str] = {}
    link = await signed_link(korall, body, model, check=True, purpose="validation")
    if link is not None:
        links[LINK_KEY] = link.url
    twin_source = model.validation.cpu_twin
    if twin_source is not None and twin_source.s3 is not None:
        twin = model.model_copy(update={"model": twin_source.as_source()})
        twin_link = await signed_link(korall, body, twin, check=True, purpose="validation")
        links["twin"] = twin_link.url
    job = build_validation_job(
        name, namespace, model, korall.settings, job_name=job_name, sha256=sha256, config=config, owner=body
    )
    try:
        created = await korall.kube.create("batch/v1", "jobs", namespace, job)
    except Conflict:  # this validation was started before (the reconcile ran again before its status write)
        created = await _own_job(korall, namespace, job_name, meta["uid"])
    except ApiError as e:
        if e.status in (400, 422):
            raise SpecError("ValidationJobRejected", f"the API server refused validation Job {job_name}: {e}") from e
        raise
    if links and created.get("metadata", {}).get("uid"):
        secret = link_secret(created, validation_link_secret(job_name), links, korall.settings.vision_image)
        await korall.kube.apply(secret)
    return ValidationRecord(
        sha256=sha256,
        config=config,
        state="Running",
        job=job_name,
        generation=generation,
        started_at=now_iso(time.time()),
        timeout_s=float(korall.settings.validation_timeout_s),
        job_uid=str(created.get("metadata", {}).get("uid") or ""),
    )


SUPERSEDED_RETRY_S = 5
"""Wait before a reconcile that could not delete a superseded validation Job is tried again."""


async def stop_superseded(
    korall: State, body: Mapping[str, Any], jobs: Mapping[str, str], sha256: str, config: str
) -> None:
    """Delete the validation Jobs (name -> the sha256 they validate) of models the spec no longer asks for, with
    their pods (Background propagation: a Job's own default orphans them, and they would run on), each with a
    Normal Event. Only Jobs this InferenceModel owns; one already gone is not mentioned."""
    meta = body["metadata"]
    failed = []
    for job, job_sha in sorted(jobs.items()):
        try:
            deleted = await korall.kube.delete_owned("batch/v1", "jobs", meta["namespace"], job, meta["uid"])
        except (ApiError, aiohttp.ClientError) as e:
            failed.append(f"{job}: {e}")
            continue
        if deleted:
            other = "" if job_sha != sha256 else f" under other validation settings ({config})"
            message = (f"validation of model {job_sha[:12]} stopped, Job {job} deleted with its pod: the spec now "
                       f"asks for model {sha256[:12]}{other}; its outcome is not recorded")  # fmt: skip
            await korall.events.record(body, "Normal", "ValidationSuperseded", message)
    if failed:
        raise kopf.TemporaryError(
            f"superseded validation Jobs not deleted yet ({'; '.join(failed)}); retrying in {SUPERSEDED_RETRY_S} s",
            delay=SUPERSEDED_RETRY_S,
        )


OWNED_RETRY_S = 5
"""Wait before trying again to create a validation Job whose name another InferenceModel's Job still holds."""


async def _own_job(korall: State, namespace: str, job_name: str, uid: str) -> dict[str, Any]:
    """The existing Job of this name, if this very InferenceModel (`uid`) owns it. One of the same name may be a
    previous InferenceModel's, deleted and created again under the same name while the garbage collector has not
    yet removed its Job (the name holds no uid): taking it would wait for a Job that is about to vanish. Then the
    reconcile is retried until the old Job is gone."""
    existing = await korall.kube.get("batch/v1", "jobs", namespace, job_name)
    refs = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
    owner = next((str(r.get("uid")) for r in refs if r.get("controller")), None)
    if existing is not None and owner == uid:
        return existing
    why = "was just deleted" if existing is None else f"belongs to another owner (uid {owner or 'none'}), likely a " \
        "previous InferenceModel of this name that the garbage collector has not removed yet"  # fmt: skip
    raise kopf.TemporaryError(
        f"validation Job {job_name} {why}; creating it again in {OWNED_RETRY_S} s", delay=OWNED_RETRY_S
    )


def job_gone(job: str, job_uid: str = "") -> Outcome:
    """The outcome of a validation whose Job was deleted before it reported (by hand, or with its owner)."""
    message = f"Job {job} was deleted before it reported an outcome"
    return Outcome("Error", "ValidationJobGone", message, job_uid=job_uid)


@kopf.on.event("", "v1", "pods", labels=VALIDATION)
async def validation_pod_changed(body: kopf.Body, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    outcome = outcome_of_pod(body, annotations.get(SHA256_ANNOTATION))
    if outcome is not None:  # recorded only on the record of the Job that controls the pod (outcome.job_uid)
        await _record(memo, body, annotations, outcome, kwargs, logger)


@kopf.on.event("batch", "v1", "jobs", labels=VALIDATION)
async def validation_job_changed(type: str, body: kopf.Body, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    """A Job that failed as a whole, or was deleted before its pod told how it ended (recorded for the
    InferenceModel that owns it only: one of the same name may have been created again meanwhile)."""
    meta = body.get("metadata") or {}
    outcome = outcome_of_job(body)
    if outcome is None and type == "DELETED":
        namespace, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid") or "")
        outcome = Indexes.of(kwargs).validation_outcome(namespace, name, uid) or job_gone(name, uid)
    if outcome is not None:
        annotations = {**(meta.get("annotations") or {})}
        annotations.setdefault(JOB_ANNOTATION, meta.get("name"))
        owner = next((str(r.get("uid")) for r in meta.get("ownerReferences") or [] if r.get("controller")), "")
        await _record(memo, body, annotations, outcome, kwargs, logger, owner_uid=owner)


async def _record(
    memo: Any,
    body: Mapping[str, Any],
    annotations: Mapping[str, Any],
    outcome: Outcome,
    kwargs: dict[str, Any],
    logger: kopf.Logger,
    owner_uid: str | None = None,
) -> None:
    name, job = annotations.get(MODEL_NAME_ANNOTATION), annotations.get(JOB_ANNOTATION)
    namespace = (body.get("metadata") or {}).get("namespace")
    if not (name and job and namespace):
        return
    korall, indexes = state(memo), Indexes.of(kwargs)
    view = indexes.parent("InferenceModel", namespace, name)
    if view is not None and _finished(view.status, job):
        return  # recorded already (the watch repeats a finished pod on every change and relist): no API call
    try:
        await record_outcome(korall, namespace, name, job, outcome, owner_uid=owner_uid)
    except (ApiError, aiohttp.ClientError) as e:  # the pod's next event, or the resync's relist, repeats it
        logger.warning(f"validation outcome of Job {job} not recorded yet: {e}")


def _finished(status: Mapping[str, Any], job: str) -> bool:
    return any(r.job == job and r.done for r in records(status))


async def record_outcome(
    korall: State, namespace: str, name: str, job: str, outcome: Outcome, *, owner_uid: str | None = None
) -> None:
    """Finish the Running record of `job` if the outcome is of its Job (`outcome.job_uid`): status.validations,
    status.history, an Event; then have the InferenceModel reconciled (the gate may admit or refuse its model now).
    `owner_uid`: only if the InferenceModel is that one (the Job's owner), not another created since under the
    same name."""
    key = ("InferenceModel", namespace, name)
    finished: dict[str, Any] = {}

    async def status_of(parent: Mapping[str, Any]) -> dict[str, Any] | None:
        status = parent.get("status") or {}
        running = next(
            (r for r in records(status) if r.job == job and r.state == "Running" and r.is_of(outcome.job_uid)), None
        )
        if running is None:
            return None
        record = outcome.finish(running, time.time())
        catalog = status.get("catalog") or {}
        source, stage = (catalog.get("source", ""), catalog.get("stage", "")) if catalog.get("sha256") == \
            record.sha256 else ("", "")  # fmt: skip
        ref = ModelRef(record.sha256, str(source), str(stage), {})
        entry = history_entry(f"Validation{record.state}", ref, time.time(), validation=record.state,
                              message=f"{record.reason}: {record.message}")  # fmt: skip
        finished.update(record=record, parent=parent)
        return {"validations": with_record(status, record), "history": appended(status.get("history"), [entry])}

    async with korall.writers.exclusive(key):
        result = await write_status(korall.kube, API, INFERENCE_MODELS, namespace, name, owner_uid, status_of)
        if result is not None:
            korall.writers.remember(key, result[0].get("status") or {}, result[1])
    if result is None:
        return
    record: ValidationRecord = finished["record"]
    type_, reason = EVENT_OF[record.state]
    what = f"model {record.sha256[:12]} (Job {job})"
    await korall.events.record(finished["parent"], type_, reason, f"{what}: {record.reason}: {record.message}")
    if st.waits_for_spec_change(finished["parent"].get("status")):
        return  # its reconcile stops before the gate: it runs when the spec changes
    stamp = datetime.datetime.now(tz=datetime.UTC).isoformat()
    with contextlib.suppress(NotFound):  # deleted meanwhile
        await korall.kube.merge_patch(
            API, INFERENCE_MODELS, namespace, name, {"metadata": {"annotations": {RECONCILE_REQUESTED: stamp}}}
        )


def finish_known(status: Mapping[str, Any], indexes: Indexes, namespace: str, now: float) -> list[ValidationRecord]:
    """The Running records whose outcome the indexes already know, or whose Job is gone, finished (the reconcile
    writes them)."""
    out = []
    for record in records(status):
        running = record.state == "Running"
        outcome = indexes.validation_outcome(namespace, record.job, record.job_uid) if running else None
        if outcome is None and indexes.validation_job_gone(namespace, record, now):
            outcome = job_gone(record.job, record.job_uid)
        if outcome is not None:
            out.append(outcome.finish(record, now))
    return out
