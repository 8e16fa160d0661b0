"""catalog/gate.py and catalog/outcomes.py: the whole policy, as pure functions (no server).

Each test walks a model through the statuses the operator would write, feeding each decision's catalog back as the
next status, the way the reconcile does: what serves, what waits and why, when a Job starts, when a model is
rolled back and when it is tried again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from korall_contract import VALIDATION_RESULT_SCHEMA
from korall_operator.catalog import (
    HISTORY_LIMIT,
    Approval,
    GateInputs,
    ModelRef,
    ValidationRecord,
    appended,
    applied_spec,
    attention,
    decide,
    outcome_of_job,
    outcome_of_pod,
    with_record,
)
from korall_operator.catalog.records import now_iso, slim_status
from korall_operator.status import as_the_pods_show

A, B, C = "a" * 64, "b" * 64, "c" * 64
T0 = 1_800_000_000.0


def ref(sha: str, stage: str = "production", file: str = "m.tflite") -> ModelRef:
    return ModelRef(sha, f"https://models.example/{sha[:4]}/{file}", stage, {"model": {"url": "u", "sha256": sha}})


def inputs(
    desired: ModelRef,
    status: dict[str, Any],
    *,
    now: float = T0,
    generation: int = 1,
    approvals: tuple[Approval, ...] = (),
    requester: str | None = "alice",
    deadline: int = 60,
) -> GateInputs:
    return GateInputs(
        name="yard",
        desired=desired,
        config="cfg00001",
        generation=generation,
        status=status,
        approvals=approvals,
        requester=requester,
        four_eyes=True,
        now=now,
        rollout_deadline_s=deadline,
    )


def record(sha: str, state: str, generation: int = 1, started: float = T0) -> ValidationRecord:
    failed = state == "Failed"
    return ValidationRecord(sha, "cfg00001", state, f"yard-validate-{sha[:8]}-cfg0-{generation}", generation,  # type: ignore[arg-type]
                            now_iso(started), reason="GoldenSetMismatch" if failed else "",
                            message="chelsea.jpg: expected cat" if failed else "", timeout_s=900)  # fmt: skip


def serving_ready(status: dict[str, Any], sha: str) -> dict[str, Any]:
    """What the Deployment watcher writes once the admitted model's pods are all ready."""
    ready = {"type": "Ready", "status": "True", "reason": "Available"}
    return {**status, "activeModelSha256": sha, "specHash": "h", "conditions": [ready]}


def after(status: dict[str, Any], decision: Any, *records: ValidationRecord) -> dict[str, Any]:
    out = {**status, "catalog": decision.catalog, "history": appended(status.get("history"), decision.history)}
    for r in records:
        out["validations"] = with_record(out, r)
    return out


def test_test_and_demo_serve_at_once_and_demo_is_validated_for_the_record() -> None:
    test = decide(inputs(ref(A, "test"), {}))
    assert test.applied is not None and test.applied.sha256 == A and test.promotion.promoted
    assert (test.start_validation, test.catalog["validated"], test.catalog["approved"]) == (
        False,
        "NotRequired",
        "NotRequired",
    )
    demo = decide(inputs(ref(B, "demo"), after({}, test)))
    assert demo.applied is not None and demo.applied.sha256 == B  # not held: demo does not wait for it
    assert demo.start_validation and demo.catalog["validated"] == "Running"
    assert demo.catalog["rollout"] is None  # only production rolls back


def test_production_waits_for_validation_then_approval_while_the_old_model_serves() -> None:
    status = serving_ready(after({}, decide(inputs(ref(A, "demo"), {}))), A)
    first = decide(inputs(ref(B), status))
    assert first.start_validation and first.promotion.reason == "PendingValidation"
    assert first.applied is not None and first.applied.sha256 == A  # the model that served keeps serving
    assert first.catalog["lastGood"]["sha256"] == A
    status = after(status, first, record(B, "Running"))

    again = decide(inputs(ref(B), status))
    assert not again.start_validation and again.promotion.reason == "PendingValidation"  # one Job, not two
    status = after(status, again, record(B, "Passed"))

    waiting = decide(inputs(ref(B), status))
    assert waiting.promotion.reason == "PendingApproval" and not waiting.promotion.degraded
    assert "kubectl korall approve yard" in waiting.promotion.message
    assert waiting.applied is not None and waiting.applied.sha256 == A
    assert ("Normal", "PendingApproval") in [(t, r) for t, r, _ in waiting.events]
    status = after(status, waiting)

    own = Approval("a1", "yard", B, "alice")  # alice requested it: four-eyes refuses her approval
    refused = decide(inputs(ref(B), status, approvals=(own,)))
    assert refused.promotion.reason == "PendingApproval" and "approved only by alice" in refused.promotion.message
    assert not attention(status, [own], T0)
    assert attention({**status, "catalog": {**status["catalog"], "fourEyes": False}}, [own], T0)  # off: it counts

    # No requester recorded: no approval counts with four eyes on, so none may draw the resync loop's attention
    # either (a model that attention() calls and decide() leaves pending would be reconciled every round)
    unknown = decide(inputs(ref(B), status, approvals=(own,), requester=None))
    assert unknown.promotion.reason == "PendingApproval" and "who requested it is not recorded" in (
        unknown.promotion.message
    )
    assert not attention(after(status, unknown), [own], T0)

    bob = Approval("a2", "yard", B, "bob")
    assert attention(status, [own, bob], T0)
    admitted = decide(inputs(ref(B), status, approvals=(own, bob), now=T0 + 5))
    assert admitted.applied is not None and admitted.applied.sha256 == B and admitted.promotion.promoted
    assert admitted.catalog["approved"] == "bob" and admitted.catalog["serving"]["approvedBy"] == "bob"
    assert admitted.catalog["rollout"]["sha256"] == B and admitted.catalog["rollout"]["deadlineSeconds"] == 60
    assert [e["event"] for e in admitted.history] == ["Promoted"]
    assert ("Normal", "Promoted") in [(t, r) for t, r, _ in admitted.events]


def test_a_model_that_fails_validation_is_refused_and_the_old_one_keeps_serving() -> None:
    status = serving_ready(after({}, decide(inputs(ref(A), {}, approvals=()))), A)
    status["catalog"]["serving"] = ref(A).as_status()  # A serves (admitted earlier)
    status = after(status, decide(inputs(ref(C), status)), record(C, "Failed"))
    refused = decide(inputs(ref(C), status))
    assert refused.promotion.reason == "ValidationFailed" and refused.promotion.degraded
    assert "GoldenSetMismatch: chelsea.jpg: expected cat" in refused.promotion.message
    assert refused.applied is not None and refused.applied.sha256 == A and not refused.start_validation
    assert refused.catalog["validated"] == "Failed"
    # judged: not validated again on a mere spec change (replicas); another golden set would be another config
    assert not decide(inputs(ref(C), status, generation=2)).start_validation


def test_a_validation_that_could_not_run_is_tried_again_only_when_the_spec_changes() -> None:
    status = after({}, decide(inputs(ref(B), {})), record(B, "Error", generation=1))
    held = decide(inputs(ref(B), status))
    assert held.promotion.reason == "ValidationError" and held.applied is None and not held.start_validation
    assert decide(inputs(ref(B), status, generation=2)).start_validation
    overdue = after({}, decide(inputs(ref(B), {})), record(B, "Running", started=T0))
    late = decide(inputs(ref(B), overdue, now=T0 + 900 + 121))
    assert late.expired is not None and late.promotion.reason == "ValidationError"
    assert attention(overdue, [], T0 + 900 + 121) and not attention(overdue, [], T0 + 60)


def test_a_production_model_not_ready_in_time_is_rolled_back_and_not_retried_until_the_spec_changes() -> None:
    approve = (Approval("x", "yard", B, "bob"),)
    status: dict[str, Any] = serving_ready({"catalog": {"serving": ref(A).as_status()}}, A)
    status = after(status, decide(inputs(ref(B), status)), record(B, "Passed"))
    admitted = decide(inputs(ref(B), status, approvals=approve, now=T0))
    status = after({**status, "conditions": [{"type": "Ready", "status": "False"}]}, admitted)
    assert not attention(status, [], T0 + 30)
    assert attention(status, [], T0 + 61)  # past the deadline: the gate must run
    assert attention(slim_status(status), [], T0 + 61)  # from what the operator keeps in memory, too
    assert "history" not in slim_status(status) and "spec" not in slim_status(status)["catalog"]["serving"]

    rolled = decide(inputs(ref(B), status, approvals=approve, now=T0 + 61))
    assert rolled.applied is not None and rolled.applied.sha256 == A
    assert rolled.promotion.reason == "RolledBack" and rolled.promotion.degraded
    assert "was not ready 60 s after its rollout began; rolled back to aaaaaaaaaaaa" in rolled.promotion.message
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in rolled.events]
    assert rolled.catalog["rolledBack"]["sha256"] == B and rolled.catalog["rollout"] is None
    status = after(status, rolled)
    assert decide(inputs(ref(B), status, approvals=approve, now=T0 + 90)).promotion.reason == "RolledBack"
    retried = decide(inputs(ref(B), status, approvals=approve, now=T0 + 90, generation=2))
    assert retried.applied is not None and retried.applied.sha256 == B  # the spec changed: tried again


def test_a_rollout_whose_apply_failed_is_rolled_back_saying_why_not_that_its_pods_were_not_ready() -> None:
    """A reconcile that failed while applying the new model (its S3 object deleted) leaves a status that no longer
    follows the pods: at the deadline the rollback names that failure."""
    approve = (Approval("x", "yard", B, "bob"),)
    status: dict[str, Any] = serving_ready({"catalog": {"serving": ref(A).as_status()}}, A)
    status = after(status, decide(inputs(ref(B), status)), record(B, "Passed"))
    status = after(status, decide(inputs(ref(B), status, approvals=approve, now=T0)))
    lost = {"reason": "ModelObjectNotFound", "message": "s3://m/b does not exist (404)", "during": "rollout"}
    status = {**status, "specHash": None, "lastFailure": lost}
    rolled = decide(inputs(ref(B), status, approvals=approve, now=T0 + 61))
    assert rolled.promotion.reason == "RolledBack" and "was not ready" not in rolled.promotion.message
    assert (
        "could not be seen ready (applying it failed: ModelObjectNotFound: s3://m/b does not exist (404)) within"
        " 60 s after its rollout began; rolled back to aaaaaaaaaaaa" in rolled.promotion.message
    )


def deployment_of(sha: str, ready: int, replicas: int = 1) -> dict[str, Any]:
    """The model's Deployment as the indexes keep it (observed.slim_deployment): `ready` of `replicas` pods ready."""
    annotations = {"korall.io/spec-hash": f"h-{sha[:4]}", "korall.io/model-sha256": sha}
    return {
        "metadata": {"name": "yard-vision", "generation": 2},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
        "status": {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready},
    }


def test_a_rollout_whose_pods_got_ready_while_a_reconcile_failed_is_complete_not_rolled_back() -> None:
    """While a production model rolls out, an edit of another field fails (a CaptureProfile that does not exist,
    found before the gate): nothing is applied, the status stops following the pods (no specHash), and they get
    ready meanwhile. The gate, at the reconcile of the fixed spec past the deadline, judges the pods as the
    Deployment shows them (status.as_the_pods_show): complete, the new last good model, nothing rolled back. Pods
    that are not ready by then are rolled back as ever."""
    approve = (Approval("x", "yard", B, "bob"),)
    status: dict[str, Any] = serving_ready({"catalog": {"serving": ref(A).as_status()}}, A)
    status = after(status, decide(inputs(ref(B), status)), record(B, "Passed"))
    status = after(status, decide(inputs(ref(B), status, approvals=approve, now=T0)))  # B admitted, rolling out
    typo = {"reason": "CaptureProfileNotFound", "message": "...", "during": "spec"}
    not_ready = [{"type": "Ready", "status": "False", "reason": "RollingOut"}, {"type": "Degraded", "status": "True"}]
    failed = {**status, "specHash": None, "lastFailure": typo, "conditions": not_ready}
    assert as_the_pods_show(failed, None) is failed and as_the_pods_show(failed, deployment_of(B, 0)) is failed

    seen = as_the_pods_show(failed, deployment_of(B, ready=1))
    assert seen["activeModelSha256"] == B and [c["status"] for c in seen["conditions"]] == ["True", "True"]
    fixed = decide(inputs(ref(B), seen, approvals=approve, now=T0 + 600, generation=3))  # ten deadlines later
    assert fixed.promotion.reason == "Promoted" and fixed.applied is not None and fixed.applied.sha256 == B
    assert fixed.catalog["lastGood"]["sha256"] == B and fixed.catalog["rollout"] is None
    assert fixed.catalog["rolledBack"] is None and "RolledBack" not in [r for _, r, _ in fixed.events]

    late = decide(inputs(ref(B), as_the_pods_show(failed, deployment_of(B, ready=0)), approvals=approve,
                         now=T0 + 600, generation=3))  # fmt: skip
    assert late.promotion.reason == "RolledBack" and late.applied is not None and late.applied.sha256 == A
    # A status that follows the pods is read as it is; so is a Deployment of 0 replicas (ScaledToZero decides).
    following = {**failed, "specHash": "h-bbbb"}
    assert as_the_pods_show(following, deployment_of(B, ready=1)) is following
    assert as_the_pods_show(failed, deployment_of(B, ready=0, replicas=0)) is failed


def test_a_model_admitted_at_zero_replicas_is_not_last_good_and_its_deadline_starts_when_pods_are_asked_for() -> None:
    """replicas 0 is Ready (ScaledToZero) with the admitted model's sha256 as activeModelSha256, but no pod of it has
    ever been ready: it must not become lastGood (scaled up, a model that never starts would have nothing to roll
    back to), and its rollout must not be rolled back at the deadline while no pod is asked for."""
    approve = (Approval("x", "yard", B, "bob"),)
    status: dict[str, Any] = serving_ready({"catalog": {"serving": ref(A).as_status()}}, A)
    status = after(status, decide(inputs(ref(B), status)), record(B, "Passed"))
    zero = {"type": "Ready", "status": "True", "reason": "ScaledToZero"}
    status = after(status, decide(inputs(ref(B), status, approvals=approve, now=T0)))
    status = {**status, "activeModelSha256": B, "conditions": [zero]}  # B's Deployment, at 0 replicas
    assert not attention(status, [], T0 + 1) and not attention(status, [], T0 + 600)
    idle = decide(inputs(ref(B), status, approvals=approve, now=T0 + 600))
    assert idle.catalog["lastGood"]["sha256"] == A and idle.promotion.promoted
    assert idle.catalog["rollout"]["since"] == now_iso(T0 + 600)  # the deadline counts from the pods asked for
    status = after(status, idle)
    # Raised to 1 at T0 + 600 (that reconcile ran the gate above); its pod never gets ready: rolled back to A.
    status = {**status, "conditions": [{"type": "Ready", "status": "False", "reason": "RollingOut"}]}
    assert not attention(status, [], T0 + 650) and attention(status, [], T0 + 661)
    rolled = decide(inputs(ref(B), status, approvals=approve, now=T0 + 661))
    assert rolled.promotion.reason == "RolledBack" and rolled.applied is not None and rolled.applied.sha256 == A


def test_a_completed_rollout_becomes_the_last_good_model() -> None:
    status: dict[str, Any] = {"catalog": {"serving": ref(A).as_status(), "rollout": {
        "key": ref(A).key, "sha256": A, "since": now_iso(T0), "deadlineSeconds": 60}}}  # fmt: skip
    assert not attention(status, [], T0 + 1)
    ready = serving_ready(status, A)
    assert attention(ready, [], T0 + 1) and attention(slim_status(ready), [], T0 + 1)
    done = decide(inputs(ref(A), ready))
    assert done.catalog["rollout"] is None and done.catalog["lastGood"]["sha256"] == A


def test_a_model_that_served_before_the_catalog_existed_keeps_serving() -> None:
    legacy = {"specHash": "h", "activeModelSha256": A, "conditions": [{"type": "Ready", "status": "True"}]}
    decision = decide(inputs(ref(A), legacy))
    assert decision.applied is not None and decision.promotion.promoted
    assert [e["event"] for e in decision.history] == ["Requested", "Grandfathered"]


def test_an_unrecorded_requester_cannot_be_told_apart_from_the_approver() -> None:
    status = after({}, decide(inputs(ref(B), {}, requester=None)), record(B, "Passed"))
    held = decide(inputs(ref(B), status, requester=None, approvals=(Approval("x", "yard", B, "bob"),)))
    assert held.promotion.reason == "PendingApproval" and "korall.io/requested-by" in held.promotion.message


def test_the_applied_spec_is_the_spec_with_the_serving_models_fields_and_stage() -> None:
    spec = {"model": {"url": "new", "sha256": B}, "accelerator": "edgetpu", "tpuInterface": "usb", "replicas": 3,
            "stage": "production", "scoreThreshold": 0.7}  # fmt: skip
    old = ModelRef(A, "old", "demo", {"model": {"file": "m.tflite"}, "accelerator": "cpu", "labels": "coco_labels.txt"})
    assert applied_spec(spec, old) == {"model": {"file": "m.tflite"}, "accelerator": "cpu", "labels": "coco_labels.txt",
                                       "replicas": 3, "stage": "demo", "scoreThreshold": 0.7}  # fmt: skip


def test_the_history_keeps_the_last_twenty_entries() -> None:
    entries = [{"event": str(i)} for i in range(30)]
    assert [e["event"] for e in appended(entries[:15], entries[15:])] == [str(i) for i in range(10, 30)]
    assert HISTORY_LIMIT == 20


# ---------------------------------------------------------------------------------------------- outcomes


def pod(*, main: dict[str, Any] | None = None, init: dict[str, Any] | None = None, phase: str = "Running") -> dict:
    status: dict[str, Any] = {"phase": phase}
    if main is not None:
        status["containerStatuses"] = [{"name": "validate", "state": main}]
    if init is not None:
        status["initContainerStatuses"] = [{"name": "model-fetch", "state": init}]
    return {"status": status}


def result(verdict: str, sha: str = B) -> str:
    return json.dumps({"schema": VALIDATION_RESULT_SCHEMA, "sha256": sha, "result": verdict,
                       "reason": "GoldenSetMismatch", "message": "1/4 golden images passed", "durationSeconds": 1.5,
                       "checks": {"run": "cpu"}, "images": [{"image": "chelsea.jpg", "passed": False}],
                       "omitted": 2})  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (pod(main={"running": {}}), None),
        (pod(main={"terminated": {"exitCode": 1, "message": result("Failed")}}, phase="Failed"),
         ("Failed", "GoldenSetMismatch")),
        (pod(main={"terminated": {"exitCode": 0, "message": result("Passed")}}, phase="Succeeded"),
         ("Passed", "GoldenSetMismatch")),
        (pod(main={"terminated": {"exitCode": 0, "message": result("Passed", sha=A)}}), ("Error", "WrongModel")),
        # A Passed result from a validator that then failed (killed after it wrote it): not taken as passed.
        (pod(main={"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": result("Passed")}},
             phase="Failed"), ("Error", "ValidatorCrashed")),
        (pod(main={"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "Killed"}}, phase="Failed"),
         ("Error", "ValidatorCrashed")),
        (pod(init={"terminated": {"exitCode": 4, "message": "ModelDownloadFailed: ChecksumMismatch: gave 6 bytes"}},
             phase="Failed"), ("Failed", "ChecksumMismatch")),
        (pod(init={"terminated": {"exitCode": 5, "message": "ModelDownloadFailed: LinkExpired: 403"}},
             phase="Failed"), ("Error", "LinkExpired")),
        ({"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}}, ("Error", "Evicted")),
    ],
)  # fmt: skip
def test_how_a_validation_pod_ended(body: dict[str, Any], expected: tuple[str, str] | None) -> None:
    outcome = outcome_of_pod(body, B)
    assert (outcome.state, outcome.reason) == expected if outcome else expected is None


def test_the_result_keeps_per_image_outcomes_and_how_many_were_left_out() -> None:
    outcome = outcome_of_pod(pod(main={"terminated": {"exitCode": 1, "message": result("Failed")}}), B)
    assert outcome is not None and outcome.duration_s == 1.5
    assert outcome.images == [{"image": "chelsea.jpg", "passed": False}, {"omitted": 2}]


def test_an_outcome_is_of_the_job_that_controls_the_pod_and_a_record_takes_only_its_own_jobs() -> None:
    """A pod of a predecessor's Job of the same name (a model deleted and created again) says nothing of the new
    Job: outcomes carry their Job's uid, from the pod's controller ownerReference, else the Job controller's label
    (kept on an orphaned pod)."""
    from korall_operator.catalog.outcomes import JOB_UID_LABEL
    from korall_operator.catalog.records import ValidationRecord
    from korall_operator.handlers.indexes import Indexes

    ended = pod(main={"terminated": {"exitCode": 1, "message": result("Failed")}}, phase="Failed")
    owner = {"kind": "Job", "name": "j", "uid": "old", "controller": True}
    owned = {**ended, "metadata": {"ownerReferences": [owner], "labels": {JOB_UID_LABEL: "ignored"}}}
    orphan = {**ended, "metadata": {"labels": {JOB_UID_LABEL: "older"}}}
    assert [outcome_of_pod(p, B).job_uid for p in (owned, orphan, ended)] == ["old", "older", ""]  # type: ignore[union-attr]
    outcome = outcome_of_pod(owned, B)
    indexes = Indexes({}, {}, {}, {}, {}, pod_outcomes={("ns", "j"): [outcome]})  # type: ignore[arg-type]
    assert indexes.validation_outcome("ns", "j", "old") == outcome
    assert indexes.validation_outcome("ns", "j", "new") is None
    mine = ValidationRecord(B, "c", "Running", "j", 1, "2026-01-01T00:00:00Z", job_uid="new")
    assert not mine.is_of("old") and mine.is_of("new")
    assert ValidationRecord.from_status(mine.as_status()) == mine  # the uid is kept in the status
    assert ValidationRecord(B, "c", "Running", "j", 1, "").is_of("old")  # recorded before uids were: as before


def test_a_job_that_ran_out_of_time_is_an_error() -> None:
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                         "message": "Job was active longer than specified deadline"}]}}  # fmt: skip
    outcome = outcome_of_job(failed)
    assert outcome is not None and (outcome.state, outcome.reason) == ("Error", "ValidationTimedOut")
    assert outcome_of_job({"status": {"active": 1}}) is None


def test_a_demo_model_promoted_as_it_is_changes_stage_without_a_rollout() -> None:
    status = serving_ready(after({}, decide(inputs(ref(A, "demo"), {}))), A)
    status = after(status, decide(inputs(ref(A), status)), record(A, "Passed"))
    promoted = decide(inputs(ref(A), status, approvals=(Approval("x", "yard", A, "bob"),)))
    assert promoted.applied is not None and promoted.applied.stage == "production" and promoted.promotion.promoted
    assert promoted.catalog["rollout"] is None  # the same model: nothing rolls out, nothing to roll back
    assert [e["event"] for e in promoted.history] == ["StageChanged"]
    assert ("Normal", "Promoted") in [(t, r) for t, r, _ in promoted.events]
