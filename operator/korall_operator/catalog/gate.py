"""The gate: given the spec's model, the status and the approvals, which model the Deployment runs, and why (pure).

Stages (docs/catalog.md):

- `test`: the spec's model serves at once; no validation, no approval.
- `demo`: the same, and every new model (sha256) is validated, for the record (`kubectl get im` shows it; a model
  that passed goes straight to approval when promoted).
- `production`: a new model serves only once its validation passed and a ModelApproval names its sha256 (from
  someone other than its requester, with four-eyes on). Until then the model that was admitted before keeps
  serving: the reconcile applies *its* gated spec fields (records.GATED_FIELDS), not the new ones. After a new
  model is admitted, its pods must all be ready within `validation.rolloutDeadlineSeconds` (their readiness
  includes the golden-set self-test), or the gate rolls back to the last model whose rollout completed, and does
  not admit the failed one again until the spec changes (a new generation).

`decide()` is the whole policy; the handlers only carry out its Decision (a validation Job to start, a status to
write, Events to post). `attention()` tells the resync loop when the gate must run again without a spec change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from korall_operator.catalog.records import (
    Approval,
    ModelRef,
    ValidationRecord,
    epoch,
    history_entry,
    now_iso,
    record_for,
)


@dataclass(frozen=True)
class StagePolicy:
    validate: bool  # every new model gets a validation Job
    hold_until_valid: bool  # ... and serves only once it passed
    approve: bool  # ... and once a ModelApproval names it
    roll_back: bool  # a model whose pods are not ready in time is rolled back


POLICIES = {
    "test": StagePolicy(validate=False, hold_until_valid=False, approve=False, roll_back=False),
    "demo": StagePolicy(validate=True, hold_until_valid=False, approve=False, roll_back=False),
    "production": StagePolicy(validate=True, hold_until_valid=True, approve=True, roll_back=True),
}

PROMOTED = "Promoted"
PENDING_VALIDATION = "PendingValidation"
PENDING_APPROVAL = "PendingApproval"
VALIDATION_FAILED = "ValidationFailed"
VALIDATION_ERROR = "ValidationError"
ROLLED_BACK = "RolledBack"
REQUESTER_ANNOTATION = "korall.io/requested-by"


@dataclass(frozen=True)
class Promotion:
    """The Promoted condition: the spec's model (and stage) is the one applied, or why not."""

    promoted: bool
    reason: str
    message: str
    degraded: bool = False  # a failure (Degraded True), not a wait

    def as_status(self) -> dict[str, Any]:
        return {"promoted": self.promoted, "reason": self.reason, "message": self.message, "degraded": self.degraded}

    @classmethod
    def from_status(cls, value: Any) -> Promotion | None:
        if not isinstance(value, Mapping) or not value.get("reason"):
            return None
        return cls(bool(value.get("promoted")), str(value["reason"]), str(value.get("message", "")),
                   bool(value.get("degraded")))  # fmt: skip


def promotion_of(status: Mapping[str, Any] | None) -> Promotion | None:
    return Promotion.from_status(((status or {}).get("catalog") or {}).get("promotion"))


@dataclass(frozen=True)
class GateInputs:
    name: str  # the InferenceModel's
    desired: ModelRef  # the spec's model, at the spec's stage
    config: str  # records.validation_config of the spec
    generation: int
    status: Mapping[str, Any]
    approvals: Sequence[Approval]
    requester: str | None  # the korall.io/requested-by annotation
    four_eyes: bool
    now: float
    rollout_deadline_s: int


@dataclass
class Decision:
    applied: ModelRef | None  # whose gated fields the Deployment gets; None: nothing admitted yet, apply nothing
    promotion: Promotion
    start_validation: bool  # no live validation of this model and settings: start a Job
    expired: ValidationRecord | None  # a validation that never reported: to be recorded as an Error
    catalog: dict[str, Any]  # status.catalog (a merge patch: None removes a key)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


SCALED_TO_ZERO = "ScaledToZero"
"""The Ready reason of a Deployment of 0 replicas (status.py): Ready, yet no pod of its model has run."""


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


def scaled_to_zero(status: Mapping[str, Any]) -> bool:
    """Whether the model's Deployment asks for no pod: its rollout can neither complete nor run out of time."""
    ready = _ready(status)
    return ready.get("status") == "True" and ready.get("reason") == SCALED_TO_ZERO


def rollout_complete(status: Mapping[str, Any], serving: ModelRef | Mapping[str, Any]) -> bool:
    """Whether the serving model's pods are all ready: it becomes the last good model. Not at 0 replicas: a model
    admitted then has never run a pod, and taken for good it would leave nothing to roll back to once scaled up."""
    sha = serving.sha256 if isinstance(serving, ModelRef) else serving.get("sha256")
    return (
        _ready(status).get("status") == "True" and status.get("activeModelSha256") == sha and not scaled_to_zero(status)
    )


def decide(i: GateInputs) -> Decision:
    cat: Mapping[str, Any] = i.status.get("catalog") or {}
    desired, policy = i.desired, POLICIES.get(i.desired.stage, POLICIES["test"])
    serving = ModelRef.from_status(cat.get("serving"))
    last_good = ModelRef.from_status(cat.get("lastGood"))
    rollout = dict(cat["rollout"]) if isinstance(cat.get("rollout"), Mapping) else None
    rolled_back = dict(cat["rolledBack"]) if isinstance(cat.get("rolledBack"), Mapping) else None
    history: list[dict[str, Any]] = []
    events: list[tuple[str, str, str]] = []

    if (cat.get("sha256"), cat.get("stage")) != (desired.sha256, desired.stage):
        by = f"requested by {i.requester}" if i.requester else ""
        history.append(history_entry("Requested", desired, i.now, message=by))

    # A model that served before the catalog existed (an operator upgrade) is recorded as admitted: not held back,
    # not validated after the fact (its next model is).
    grandfathered = (
        serving is None and bool(i.status.get("specHash")) and (i.status.get("activeModelSha256") == desired.sha256)
    )
    if grandfathered:
        serving = last_good = replace(desired, since=now_iso(i.now))
        history.append(history_entry("Grandfathered", desired, i.now, message="served before the catalog existed"))

    # The admitted model's rollout: the last model seen serving ready is the one to roll back to; a production
    # rollout past its deadline rolls back to it.
    if serving is not None and rollout_complete(i.status, serving):
        last_good = serving
    if rollout is not None and (serving is None or rollout.get("key") != serving.key):
        rollout = None  # about a model no longer admitted
    if rollout is not None and serving is not None:
        if scaled_to_zero(i.status):  # no pod is asked for: the deadline counts from the reconcile that raises them
            rollout["since"] = now_iso(i.now)
        deadline = (epoch(rollout.get("since")) or i.now) + float(rollout.get("deadlineSeconds") or 300)
        if rollout_complete(i.status, serving):
            rollout = None
        elif i.now >= deadline:
            if last_good is not None and last_good.key != serving.key:
                message = (
                    f"model {serving.short} ({serving.source}) {_not_ready(i.status)} {rollout.get('deadlineSeconds')} "
                    f"s after its rollout began; rolled back to {last_good.short} ({last_good.source}); it is not "
                    "admitted again until the spec changes"
                )
                events.append(("Warning", ROLLED_BACK, message))
                history.append(history_entry(ROLLED_BACK, serving, i.now, message=message))
                rolled_back = {"sha256": serving.sha256, "key": serving.key, "generation": i.generation,
                               "time": now_iso(i.now), "message": message}  # fmt: skip
                serving = last_good
            rollout = None  # rolled back, or nothing to roll back to (the Deployment's own status says why)

    # Validation of the spec's model under the spec's settings.
    record = record_for(i.status, desired.sha256, i.config)
    expired = record if record is not None and record.overdue(i.now) else None
    state = "Error" if expired is not None else (record.state if record is not None else "Pending")
    # An Error (the model could not be judged) is tried again once the spec changes, never in a loop.
    start = (
        policy.validate
        and not grandfathered
        and (record is None or (state == "Error" and record.generation < i.generation))
    )
    if start:
        state = "Running"
    validated = state if policy.validate and not grandfathered else "NotRequired"

    # Approval: any ModelApproval of this sha256 from someone who did not request it (with four-eyes on).
    for_sha = [a for a in i.approvals if a.sha256 == desired.sha256]
    eligible = [a for a in for_sha if not i.four_eyes or (i.requester and a.approved_by != i.requester)]
    approver = eligible[0].approved_by if policy.approve and eligible else ""
    approved = "NotRequired" if not policy.approve else (approver or "Pending")

    hold = None if grandfathered else _hold(i, policy, rolled_back, state, record if not expired else None, approver,
                                              for_sha)  # fmt: skip
    if hold is None:
        admitted = replace(desired, approved_by=approver, since=now_iso(i.now))
        if serving is None or serving.key != admitted.key:
            if policy.roll_back:  # its pods must get ready in time, or it is rolled back
                rollout = {"key": admitted.key, "sha256": admitted.sha256, "since": now_iso(i.now),
                           "deadlineSeconds": i.rollout_deadline_s, "generation": i.generation}  # fmt: skip
            event = "Promoted" if desired.stage == "production" else "Serving"
            how = f", approved by {approver}" if approver else ""
            history.append(history_entry(event, admitted, i.now, validation=validated, approved_by=approver))
            if desired.stage == "production":
                events.append(("Normal", PROMOTED, f"model {admitted.short} ({admitted.source}) admitted to "
                                                   f"production{how}; rolling out"))  # fmt: skip
            serving = admitted
        elif serving.stage != admitted.stage or serving.approved_by != approver:
            history.append(history_entry("StageChanged", admitted, i.now, validation=validated, approved_by=approver))
            if desired.stage == "production" and serving.stage != "production":  # the same pods, now production
                what = f"model {admitted.short} ({admitted.source})"
                events.append(("Normal", PROMOTED, f"{what} admitted to production, approved by {approver}"))
            serving = replace(admitted, since=serving.since)
        promotion = Promotion(True, PROMOTED, f"serving {serving.short} ({serving.source}) at stage {serving.stage}")
    else:
        promotion = hold

    previous = promotion_of(i.status)
    if hold is not None and (previous is None or previous.reason != hold.reason):
        events.append(("Warning" if hold.degraded else "Normal", hold.reason, hold.message))

    catalog = {
        "sha256": desired.sha256,
        "shortSha": desired.short,
        "source": desired.source,
        "stage": desired.stage,
        "config": i.config,
        "requestedBy": i.requester,
        "fourEyes": i.four_eyes,
        "validated": validated,
        "approved": approved,
        "promotion": promotion.as_status(),
        "serving": serving.as_status() if serving is not None else None,
        "lastGood": last_good.as_status() if last_good is not None else None,
        "rollout": rollout,
        "rolledBack": rolled_back,
    }
    return Decision(serving, promotion, start, expired, catalog, history, events)


def _not_ready(status: Mapping[str, Any]) -> str:
    """Why a rollout is taken for not ready at its deadline: its pods were not, or, when a reconcile failed while
    applying it (the status then stops following the pods), that failure."""
    last = status.get("lastFailure") or {}
    if not status.get("specHash") and last.get("during") == "rollout":
        return f"could not be seen ready (applying it failed: {last.get('reason')}: {last.get('message')}) within"
    return "was not ready"


def _hold(
    i: GateInputs,
    policy: StagePolicy,
    rolled_back: Mapping[str, Any] | None,
    state: str,
    record: ValidationRecord | None,
    approver: str,
    for_sha: Sequence[Approval],
) -> Promotion | None:
    """Why the spec's model may not be admitted now, or None when it may."""
    d = i.desired
    if rolled_back and rolled_back.get("key") == d.key and rolled_back.get("generation") == i.generation:
        return Promotion(False, ROLLED_BACK, str(rolled_back.get("message") or "rolled back"), degraded=True)
    what = f"model {d.short} ({d.source})"
    if policy.hold_until_valid and state != "Passed":
        if state == "Failed" and record is not None:
            return Promotion(False, VALIDATION_FAILED, f"{what} failed validation: {record.reason}: {record.message}",
                             degraded=True)  # fmt: skip
        if state == "Error":
            detail = f"{record.reason}: {record.message}" if record is not None else "no result in time"
            return Promotion(False, VALIDATION_ERROR, f"{what} could not be validated ({detail}); it is validated "
                             "again when the spec changes", degraded=True)  # fmt: skip
        job = f" (Job {record.job})" if record is not None and record.job else ""
        return Promotion(False, PENDING_VALIDATION, f"{what} is being validated{job}")
    if policy.approve and not approver:
        if i.four_eyes and not i.requester:
            message = (
                f"{what} passed validation, but who requested it is not recorded (annotation {REQUESTER_ANNOTATION}):"
                " apply it again to record it, then have someone else approve it"
            )
        elif for_sha and i.four_eyes:
            message = (f"{what} was approved only by {i.requester}, who requested it; someone else must approve it "
                       f"(four-eyes): kubectl korall approve {i.name}")  # fmt: skip
        else:
            message = f"{what} passed validation and waits for approval: kubectl korall approve {i.name}"
        return Promotion(False, PENDING_APPROVAL, message)
    return None


def applied_spec(spec: Mapping[str, Any], ref: ModelRef) -> dict[str, Any]:
    """The spec with the admitted model's gated fields and stage: what the reconcile builds the Deployment from."""
    from korall_operator.catalog.records import GATED_FIELDS

    out = {k: v for k, v in spec.items() if k not in GATED_FIELDS}
    out.update(ref.spec)
    out["stage"] = ref.stage
    return out


def attention(status: Mapping[str, Any], approvals: Sequence[Approval], now: float) -> bool:
    """Whether the gate must run again although the spec did not change: the admitted model's rollout completed
    or ran out of time, a validation it waits for has ended (or never reported), or an approval it waits for came.

    Reads only what records.slim_status keeps (the index's view of a model)."""
    cat: Mapping[str, Any] = status.get("catalog") or {}
    serving: Mapping[str, Any] = cat["serving"] if isinstance(cat.get("serving"), Mapping) else {}
    rollout = cat.get("rollout")
    if isinstance(rollout, Mapping) and serving.get("key") and rollout.get("key") == serving.get("key"):
        if rollout_complete(status, serving):
            return True
        late = now >= (epoch(rollout.get("since")) or now) + float(rollout.get("deadlineSeconds") or 300)
        if late and not scaled_to_zero(status):
            return True
    promotion = promotion_of(status)
    sha, config = cat.get("sha256"), cat.get("config")
    if promotion is None or not sha:
        return False
    if promotion.reason == PENDING_VALIDATION:
        record = record_for(status, str(sha), str(config or ""))
        return record is None or record.done or record.overdue(now)
    if promotion.reason == PENDING_APPROVAL:
        four_eyes, requester = cat.get("fourEyes", True), cat.get("requestedBy")
        # The eligibility `decide` applies: with four eyes, an approval counts only from someone other than a
        # recorded requester (none recorded: nothing counts, and the model must not be poked for ever).
        return any(a.sha256 == sha and (not four_eyes or (requester and a.approved_by != requester)) for a in approvals)
    return False
