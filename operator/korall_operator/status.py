"""The status of korall's custom resources, computed by pure functions from what the operator knows.

Two writers share a parent's status, and both call into here, so they can never disagree on the meaning:

- the reconcile handler (after it applied the children): `reconciled_status()` or, for a spec it cannot
  serve, `failed_status()`;
- the Deployment watcher (whenever the child Deployment changes): `followed_status()`.

Both write rollout fields with the parent's resourceVersion as a precondition (handlers/_common.write_status),
so neither can put an older view of the Deployment over a newer one.

Fields (the CRD's status schema mirrors them):

- `observedGeneration`: the spec generation the operator last acted on (only the reconcile handler sets it);
- `specHash`: the pod-template hash the current spec asks for (`korall.io/spec-hash`);
- `conditions`: `Ready`, `Progressing`, `Degraded`, each with `status`, `reason`, `message`,
  `lastTransitionTime` (kept while the status does not flip) and `observedGeneration`;
- `replicas` (desired), `readyReplicas`, `updatedReplicas`;
- `activeModel`, `activeModelSha256`, `activeShortSha`: the model the ready pods actually run, its source and
  checksum (unchanged while a rollout is under way);
- `lastFailure`: `{reason, message, time}` of the last failure; kept after recovery, as a record;
- InferenceModels: the `Promoted` condition, from the catalog's gate (catalog/gate.py, `status.catalog.promotion`):
  whether the spec's model is the one applied, or why not (PendingValidation, PendingApproval, ValidationFailed,
  ValidationError, RolledBack). A gate failure makes Degraded True while the model admitted before serves, and
  Ready keeps saying how that one does.

Ready means: the Deployment observed its latest spec, its pod template carries the hash the current spec asks
for, and at least `replicas` pods are updated and ready. Degraded means a failure: the spec's (nothing rolled
out, no `specHash`), the Deployment's (progress deadline, replica failure) or a pod's (crash loop, image pull,
unschedulable, a failed init container). A spec failure belongs to the reconcile handler: the watcher leaves
those conditions alone until a fixed spec is reconciled.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from korall_operator.catalog import SCALED_TO_ZERO, Promotion, promotion_of
from korall_operator.manifests import MODEL_ANNOTATION, MODEL_SHA256_ANNOTATION, pod_template_hash
from korall_operator.observed import PodProblem

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
PROMOTED = "Promoted"

# Reasons set from the child Deployment (its pods add the kubelet's and the scheduler's: observed.pod_problem).
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REPLICA_FAILURE = "ReplicaFailure"
NOTHING_TO_ROLL_OUT = "nothing to roll out until the spec is fixed"
NO_WORKLOAD = "NoWorkload"


@dataclass(frozen=True)
class Failure:
    """Why a parent cannot be served: `reason` is a CamelCase word (condition reason, Event reason)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Rollout:
    """Where the child Deployment stands against the pod template the spec asks for."""

    desired: int
    ready: int
    updated: int
    current: bool  # the Deployment observed its spec and its template has the expected hash
    failure: Failure | None
    model: str | None  # the model of the Deployment's pod template (a file name, or the URL / S3 URI)
    model_sha256: str | None = None

    @property
    def complete(self) -> bool:
        return self.current and self.failure is None and self.updated >= self.desired and self.ready >= self.desired


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rollout_of(deployment: Mapping[str, Any], expected_hash: str | None, problem: PodProblem | None = None) -> Rollout:
    """Read a Deployment (spec and status, as the API returns it) against the expected pod-template hash.

    `problem` is what keeps one of its pods from running (observed.pod_problem): seen at once, where the
    Deployment itself would only give up at its progress deadline (and never, for a pod that crashes after its
    rollout completed)."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    desired = int(spec.get("replicas", 1))
    observed = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 1))
    current = observed and expected_hash is not None and pod_template_hash(deployment) == expected_hash
    failure = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
            failure = Failure(PROGRESS_DEADLINE_EXCEEDED, cond.get("message") or "the rollout did not progress")
        elif cond.get("type") == REPLICA_FAILURE and cond.get("status") == "True":
            failure = Failure(REPLICA_FAILURE, cond.get("message") or "pods could not be created")
    if failure is None and problem is not None:
        failure = Failure(problem.reason, problem.message)
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    return Rollout(
        desired=desired,
        ready=int(status.get("readyReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        current=current,
        failure=failure,
        model=annotations.get(MODEL_ANNOTATION),
        model_sha256=annotations.get(MODEL_SHA256_ANNOTATION) or None,
    )


def as_the_pods_show(
    status: Mapping[str, Any], deployment: Mapping[str, Any] | None, problem: PodProblem | None = None
) -> Mapping[str, Any]:
    """`status` as the catalog's gate is to judge a rollout by (never written).

    A status that stopped following the pods (a reconcile failed: no `specHash`) still says what they were when it
    stopped; the Deployment in the indexes says what they are now. When all its pods are ready on its own pod
    template, the copy says so (Ready, `activeModelSha256`): a production rollout whose pods got ready while an edit
    of another field failed, and stayed failed past the deadline, is complete, not rolled back."""
    if status.get("specHash") or deployment is None:
        return status
    rollout = rollout_of(deployment, pod_template_hash(deployment), problem)
    if not rollout.complete or rollout.desired == 0 or not rollout.model_sha256:
        return status
    ready = {"type": READY, "status": "True", "reason": "Available", "message": "seen in the Deployment"}
    others = [c for c in status.get("conditions") or [] if c.get("type") != READY]
    return {**status, "activeModelSha256": rollout.model_sha256, "conditions": [ready, *others]}


def _condition(
    type_: str, ok: bool, reason: str, message: str, previous: Mapping[str, Any], generation: int | None
) -> dict[str, Any]:
    """A condition; `lastTransitionTime` only moves when the status flips."""
    status = "True" if ok else "False"
    old = next((c for c in previous.get("conditions") or [] if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else None
    cond: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now_iso(),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    elif old and "observedGeneration" in old:
        cond["observedGeneration"] = old["observedGeneration"]
    return cond


def condition(status: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition of that type in a status, if any."""
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), None)


def spec_failure(status: Mapping[str, Any] | None) -> Failure | None:
    """The spec failure the reconcile handler reported and no fixed spec has cleared yet.

    A spec failure rolls nothing out, so its status has no `specHash`; a failure of the rollout (the Deployment's
    or a pod's) always has one.
    """
    degraded = condition(status, DEGRADED)
    if degraded and degraded.get("status") == "True" and not (status or {}).get("specHash"):
        return Failure(degraded.get("reason", "Unknown"), degraded.get("message", ""))
    return None


def waits_for_spec_change(status: Mapping[str, Any] | None) -> bool:
    """A spec failure that only a change of the spec (or of its CaptureProfile) can clear: one found before the
    catalog's gate ran (`lastFailure.during: spec`). One found while applying the model the gate admitted
    (`rollout`: its S3 object is gone, the API server refused a child) may still clear when the catalog admits
    another model, so the catalog's news must still reach it."""
    return spec_failure(status) is not None and ((status or {}).get("lastFailure") or {}).get("during") != "rollout"


def _rollout_fields(
    rollout: Rollout,
    previous: Mapping[str, Any],
    generation: int | None,
    noun: str,
    promotion: Promotion | None = None,
) -> dict[str, Any]:
    progress = f"{rollout.updated}/{rollout.desired} pods updated, {rollout.ready}/{rollout.desired} ready"
    if rollout.failure is not None:
        ready = _condition(READY, False, rollout.failure.reason, rollout.failure.message, previous, generation)
        progressing = _condition(PROGRESSING, False, rollout.failure.reason, progress, previous, generation)
        degraded = _condition(DEGRADED, True, rollout.failure.reason, rollout.failure.message, previous, generation)
    elif rollout.complete and rollout.desired == 0:  # ready as a Deployment of 0 replicas is Available: on purpose
        message = "replicas is 0: no pod runs" + (f"; {rollout.model} runs once it is raised" if rollout.model else "")
        ready = _condition(READY, True, SCALED_TO_ZERO, message, previous, generation)
        progressing = _condition(PROGRESSING, False, "RolloutComplete", progress, previous, generation)
        degraded = _condition(DEGRADED, False, "AsExpected", f"the {noun} is scaled to zero", previous, generation)
    elif rollout.complete:
        message = f"{progress}" + (f"; serving {rollout.model}" if rollout.model else "")
        ready = _condition(READY, True, "Available", message, previous, generation)
        progressing = _condition(PROGRESSING, False, "RolloutComplete", progress, previous, generation)
        degraded = _condition(DEGRADED, False, "AsExpected", f"the {noun} is healthy", previous, generation)
    else:
        ready = _condition(READY, False, "RollingOut", progress, previous, generation)
        progressing = _condition(PROGRESSING, True, "RollingOut", progress, previous, generation)
        degraded = _condition(DEGRADED, False, "AsExpected", "no failure so far", previous, generation)
    gate_failure = promotion is not None and promotion.degraded and rollout.failure is None
    if gate_failure:  # the admitted model serves, and the one the spec asks for was refused: say so
        assert promotion is not None
        degraded = _condition(DEGRADED, True, promotion.reason, promotion.message, previous, generation)
    conditions = [ready, progressing, degraded]
    if promotion is not None:
        conditions.append(_promoted(promotion, previous, generation))
    fields: dict[str, Any] = {
        "conditions": conditions,
        "replicas": rollout.desired,
        "readyReplicas": rollout.ready,
        "updatedReplicas": rollout.updated,
    }
    if rollout.complete and rollout.model:
        fields["activeModel"] = rollout.model
    if rollout.complete and rollout.model_sha256:
        fields["activeModelSha256"] = rollout.model_sha256
        fields["activeShortSha"] = rollout.model_sha256[:12]
    if rollout.failure is not None:
        fields["lastFailure"] = last_failure(rollout.failure.reason, rollout.failure.message)
    elif gate_failure:
        assert promotion is not None
        fields["lastFailure"] = last_failure(promotion.reason, promotion.message)
    return fields


def _promoted(promotion: Promotion, previous: Mapping[str, Any], generation: int | None) -> dict[str, Any]:
    return _condition(PROMOTED, promotion.promoted, promotion.reason, promotion.message, previous, generation)


def reconciled_status(
    *,
    generation: int,
    expected_hash: str,
    deployment: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    noun: str = "workload",
    problem: PodProblem | None = None,
    promotion: Promotion | None = None,
) -> dict[str, Any]:
    """The status after the reconcile handler applied the children (`deployment` as the API returned it);
    `promotion`: the catalog gate's verdict on the spec's model (InferenceModels)."""
    previous = previous or {}
    rollout = rollout_of(deployment, expected_hash, problem)
    fields = _rollout_fields(rollout, previous, generation, noun, promotion)
    return {"observedGeneration": generation, "specHash": expected_hash, **fields}


def last_failure(reason: str, message: str, during: str | None = None) -> dict[str, Any]:
    """status.lastFailure, whole: `during` is written by spec failures of InferenceModels only (None removes an
    earlier one in the merge patch, so it never outlives the failure it was written with)."""
    return {"reason": reason, "message": message, "time": now_iso(), "during": during}


def failed_status(
    *,
    generation: int,
    failure: Failure,
    previous: Mapping[str, Any] | None,
    during: str | None = None,
    promotion: Promotion | None = None,
) -> dict[str, Any]:
    """The status for a spec the operator cannot serve. Nothing is rolled out; what ran before keeps running.
    `during` (InferenceModels): `spec` or `rollout`, see `waits_for_spec_change`; `promotion`: the gate's verdict
    when the gate ran, else the Promoted condition stays as it was (the merge patch replaces the whole list)."""
    previous = previous or {}
    promoted = _promoted(promotion, previous, generation) if promotion is not None else condition(previous, PROMOTED)
    return {
        "observedGeneration": generation,
        "specHash": None,
        "conditions": [
            _condition(READY, False, failure.reason, failure.message, previous, generation),
            _condition(PROGRESSING, False, failure.reason, NOTHING_TO_ROLL_OUT, previous, generation),
            _condition(DEGRADED, True, failure.reason, failure.message, previous, generation),
            *([promoted] if promoted is not None else []),
        ],
        "lastFailure": last_failure(failure.reason, failure.message, during),
    }


def held_status(*, generation: int, promotion: Promotion, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status of an InferenceModel whose first model is not admitted yet (catalog gate): nothing is applied,
    so nothing serves; the conditions say what the model waits for, or why it was refused."""
    previous = previous or {}
    waiting = "nothing to roll out until a model is admitted"
    fields: dict[str, Any] = {
        "observedGeneration": generation,
        "specHash": None,
        "conditions": [
            _condition(READY, False, promotion.reason, promotion.message, previous, generation),
            _condition(PROGRESSING, False, promotion.reason, waiting, previous, generation),
            _condition(
                DEGRADED,
                promotion.degraded,
                promotion.reason if promotion.degraded else "AsExpected",
                promotion.message if promotion.degraded else "no failure so far",
                previous,
                generation,
            ),
            _promoted(promotion, previous, generation),
        ],
    }
    if promotion.degraded:
        fields["lastFailure"] = last_failure(promotion.reason, promotion.message)
    return fields


def no_workload_status(*, generation: int, previous: Mapping[str, Any] | None, message: str) -> dict[str, Any]:
    """The status of a valid parent that runs nothing itself (a video CaptureProfile, an input of its models).

    Every condition is set and the rollout fields are removed (None in a merge patch): a profile that was audio,
    or had a spec failure, must not keep reporting pods or a failure it no longer has.
    """
    previous = previous or {}
    return {
        "observedGeneration": generation,
        "specHash": None,
        "conditions": [
            _condition(READY, True, NO_WORKLOAD, message, previous, generation),
            _condition(PROGRESSING, False, NO_WORKLOAD, message, previous, generation),
            _condition(DEGRADED, False, "AsExpected", message, previous, generation),
        ],
        "replicas": None,
        "readyReplicas": None,
        "updatedReplicas": None,
    }


def followed_status(
    parent_status: Mapping[str, Any] | None,
    deployment: Mapping[str, Any],
    noun: str = "workload",
    problem: PodProblem | None = None,
) -> dict[str, Any] | None:
    """The status patch after the child Deployment or one of its pods changed, or None when nothing changes.

    The parent's `specHash` (written by the reconcile handler) is what the Deployment must be running.
    """
    previous = parent_status or {}
    if spec_failure(previous) is not None or not previous.get("specHash"):
        return None
    rollout = rollout_of(deployment, previous["specHash"], problem)
    fields = _rollout_fields(rollout, previous, None, noun, promotion_of(previous))
    if _same(previous, fields):
        return None
    return fields


def _same(previous: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """True when applying `fields` would change nothing but timestamps (so the watcher does not write)."""

    def strip(conds: Any) -> list[tuple[Any, ...]]:
        return [(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conds or []]

    for key, value in fields.items():
        if key == "conditions":
            if strip(previous.get("conditions")) != strip(value):
                return False
        elif key == "lastFailure":
            old = previous.get("lastFailure") or {}
            if (old.get("reason"), old.get("message")) != (value.get("reason"), value.get("message")):
                return False
        elif previous.get(key) != value:
            return False
    return True
