"""The catalog's gate inside the reconcile: which model the vision Deployment is built from.

`gate()` asks catalog/gate.py for the decision, starts the validation Job it wants (validation.py), and returns the
spec to build the Deployment from: the spec itself when its model is admitted, else the spec with the serving
model's gated fields (so the Deployment keeps its model while the new one waits), else nothing (no model admitted
yet). The status fields it adds (`catalog`, `history`, `validations`) are computed from the parent as freshly read
inside the status write, so the history is only ever appended to and a validation recorded meanwhile is kept.

A validation of a model the spec no longer asks for (another sha256, or other validation settings: a newer spec
superseded it) is stopped: its Running record is dropped in that status write, then its Job is deleted with its
pod (`announce`, after the write: an outcome that comes later finds no Running record to finish, so none is ever
recorded). A validation that had ended before is recorded as usual.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from korall_operator import status as st
from korall_operator.catalog import (
    REQUESTER_ANNOTATION,
    Decision,
    GateInputs,
    ModelRef,
    ValidationRecord,
    appended,
    applied_spec,
    decide,
    gated_part,
    history_entry,
    record_for,
    validation_config,
    with_record,
)
from korall_operator.catalog.records import records
from korall_operator.handlers._common import API, INFERENCE_MODELS, State
from korall_operator.handlers._status_writes import write_status
from korall_operator.handlers.indexes import Indexes
from korall_operator.handlers.validation import EVENT_OF, finish_known, start_validation, stop_superseded
from korall_operator.manifests.vision import model_sha256
from korall_operator.specs import InferenceModelSpec, parse_inference_model


@dataclass
class Gated:
    decision: Decision
    applied: InferenceModelSpec | None  # what the Deployment is built from; None: nothing admitted yet
    records: list[ValidationRecord]  # to write: a started Job's, an overdue one's, outcomes the indexes knew
    superseded: dict[str, str] = field(default_factory=dict)
    """Validation Jobs to stop after the status write (name -> the sha256 it validates): those the indexes know to
    run besides the one the spec asks for, and those of the Running records the write dropped."""
    finished_now: list[ValidationRecord] = field(default_factory=list)  # those the last status write finished

    def status_fields(self, parent_status: Mapping[str, Any]) -> dict[str, Any]:
        """status.catalog, the history with this decision's entries appended, the validations it recorded, without
        the Running ones the spec no longer asks for (their Jobs are added to `superseded`)."""
        now = time.time()
        running = {r.job for r in records(parent_status) if r.state == "Running"}
        status: dict[str, Any] = dict(parent_status)
        history = list(self.decision.history)
        self.finished_now = []
        for record in self.records:
            if record.state != "Running" and record.job not in running:
                continue  # finished by another writer meanwhile
            status["validations"] = with_record(status, record)
            if record.state != "Running":
                self.finished_now.append(record)
                cat = self.decision.catalog
                known = cat.get("sha256") == record.sha256
                ref = ModelRef(record.sha256, cat["source"] if known else "", cat["stage"] if known else "", {})
                history.insert(0, history_entry(f"Validation{record.state}", ref, now, validation=record.state,
                                                message=f"{record.reason}: {record.message}"))  # fmt: skip
        desired = (self.decision.catalog["sha256"], self.decision.catalog["config"])
        stopped = [r for r in records(status) if r.state == "Running" and (r.sha256, r.config) != desired]
        if stopped:
            status["validations"] = [r.as_status() for r in records(status) if r not in stopped]
            self.superseded.update({r.job: r.sha256 for r in stopped})
        fields: dict[str, Any] = {"catalog": self.decision.catalog}
        if history:
            fields["history"] = appended(parent_status.get("history"), history)
        if "validations" in status and status["validations"] != parent_status.get("validations"):
            fields["validations"] = status["validations"]
        return fields

    async def announce(self, korall: State, body: Mapping[str, Any]) -> None:
        """After the status write: stop the superseded validations (raises kopf.TemporaryError when one could not
        be deleted: the reconcile is retried, and finds its Job again), then the Events."""
        cat = self.decision.catalog
        await stop_superseded(korall, body, self.superseded, cat["sha256"], cat["config"])
        for record in self.finished_now:
            type_, reason = EVENT_OF[record.state]
            message = f"model {record.sha256[:12]} (Job {record.job}): {record.reason}: {record.message}"
            await korall.events.record(body, type_, reason, message)
        for type_, reason, message in self.decision.events:
            await korall.events.record(body, type_, reason, message)


async def gate(
    korall: State, body: Mapping[str, Any], model: InferenceModelSpec, indexes: Indexes, generation: int
) -> Gated:
    """The gate's decision for the spec's model; starts its validation Job when the decision says so.

    Raises what starting the Job raises (ApiError; SpecError or LinkUnavailable for an s3 model's link).
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    dump = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    sha = model_sha256(model, korall.settings) or ""
    desired = ModelRef(sha, model.model.display, model.stage, gated_part(dump))
    config = validation_config(dump)
    now = time.time()
    status: dict[str, Any] = dict(body.get("status") or {})
    known = finish_known(status, indexes, namespace, now)
    for record in known:  # the gate sees outcomes the indexes know, even before their record is written
        status["validations"] = with_record(status, record)
    deployment, problem = indexes.children("InferenceModel", namespace, name)
    decision = decide(
        GateInputs(
            name=name,
            desired=desired,
            config=config,
            generation=generation,
            status=st.as_the_pods_show(status, deployment, problem),  # also while the status does not follow them
            approvals=indexes.approvals_of(namespace, name),
            requester=(meta.get("annotations") or {}).get(REQUESTER_ANNOTATION) or None,
            four_eyes=korall.settings.four_eyes,
            now=now,
            rollout_deadline_s=model.validation.rollout_deadline_seconds,
        )
    )
    pending = list(known)
    if decision.expired is not None:
        message = f"no result {decision.expired.timeout_s or 0:.0f} s after the Job started (and a grace period)"
        pending.append(dataclasses.replace(decision.expired, state="Error", reason="ValidationTimedOut",
                                           message=message))  # fmt: skip
    if decision.start_validation:
        pending.append(await start_validation(korall, body, model, sha, config, generation))
    # The Job of the validation the spec asks for now runs on; any other of this model's is superseded.
    wanted = pending[-1] if decision.start_validation else record_for(status, sha, config)
    keep = wanted.job if wanted is not None and wanted.state == "Running" else None
    superseded = {j.name: j.sha256 for j in indexes.superseded_validation_jobs(namespace, meta["uid"], keep)}
    applied = None
    if decision.applied is not None:
        # The spec as it stands only when it is what the gate admitted, stage included (the same model moved to
        # production is labelled production only once admitted there).
        same = decision.applied.key == desired.key and decision.applied.stage == desired.stage
        applied = model if same else parse_inference_model(
            applied_spec(dump, decision.applied)
        )  # fmt: skip
    return Gated(decision, applied, pending, superseded)


async def write_held(korall: State, body: Mapping[str, Any], gated: Gated, generation: int, extra: Mapping) -> None:
    """The status of a model with nothing admitted yet (no Deployment): what it waits for, or why it was refused."""

    def held(previous: Mapping[str, Any]) -> dict[str, Any]:
        return st.held_status(generation=generation, promotion=gated.decision.promotion, previous=previous)

    await write_gated(korall, body, gated, held, extra)


async def write_gated(
    korall: State,
    body: Mapping[str, Any],
    gated: Gated,
    base: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    extra: Mapping,
) -> None:
    """`base` (a function of the parent's status), `extra` and the gate's fields, written from a fresh read under
    the parent's write lock; then the gate's Events. For a reconcile that applies nothing after the gate ran: a
    model with nothing admitted yet, or one whose admitted model failed to apply (what the gate decided and
    recorded, a validation it started, stays written: the catalog moves on)."""
    meta = body["metadata"]
    key = ("InferenceModel", meta["namespace"], meta["name"])

    async def status_of(parent: Mapping[str, Any]) -> dict[str, Any]:
        previous = parent.get("status") or {}
        return {**base(previous), **extra, **gated.status_fields(previous)}

    async with korall.writers.exclusive(key):
        result = await write_status(
            korall.kube, API, INFERENCE_MODELS, meta["namespace"], meta["name"], meta["uid"], status_of
        )
        if result is not None:
            korall.writers.remember(key, result[0].get("status") or {}, result[1])
    await gated.announce(korall, body)
