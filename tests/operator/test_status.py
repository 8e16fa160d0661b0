"""status.py: the pure functions both status writers share (no server needed)."""

from __future__ import annotations

from typing import Any

from korall_operator import status as st
from korall_operator.catalog import Promotion
from korall_operator.manifests import MODEL_ANNOTATION, SPEC_HASH_ANNOTATION

MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"


def deployment(hash_: str = "h1", generation: int = 2, replicas: int = 1, **status: Any) -> dict[str, Any]:
    annotations = {SPEC_HASH_ANNOTATION: hash_, MODEL_ANNOTATION: MODEL}
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations}}},
        "status": status,
    }


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_needs_the_expected_template_observed_and_all_replicas_ready() -> None:
    ready = deployment(observedGeneration=2, updatedReplicas=2, readyReplicas=2, replicas=2)
    ready["spec"]["replicas"] = 2
    status = st.reconciled_status(generation=5, expected_hash="h1", deployment=ready, previous=None)
    assert conds(status)[st.READY] == ("True", "Available")
    assert status["activeModel"] == MODEL and status["observedGeneration"] == 5

    for stale in (
        deployment(observedGeneration=1, updatedReplicas=1, readyReplicas=1),  # spec not observed yet
        deployment(hash_="old", observedGeneration=2, updatedReplicas=1, readyReplicas=1),  # another template
        deployment(observedGeneration=2, updatedReplicas=1, readyReplicas=0),  # not ready
    ):
        got = st.reconciled_status(generation=5, expected_hash="h1", deployment=stale, previous=None)
        assert conds(got)[st.READY] == ("False", "RollingOut")
        assert conds(got)[st.PROGRESSING] == ("True", "RollingOut")
        assert "activeModel" not in got


def test_zero_replicas_is_ready_and_says_no_pod_runs() -> None:
    """Ready as a Deployment of 0 replicas is Available (nothing is wrong, nothing to wait for), but the message
    must not claim that a model serves."""
    scaled = deployment(observedGeneration=2, updatedReplicas=0, readyReplicas=0, replicas=0)
    scaled["spec"]["replicas"] = 0
    status = st.reconciled_status(generation=5, expected_hash="h1", deployment=scaled, previous=None)
    assert conds(status)[st.READY] == ("True", "ScaledToZero")
    assert conds(status)[st.DEGRADED] == ("False", "AsExpected")
    ready = next(c for c in status["conditions"] if c["type"] == st.READY)
    assert ready["message"].startswith("replicas is 0: no pod runs") and "serving" not in ready["message"]


def test_progress_deadline_is_degraded() -> None:
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}
    got = st.reconciled_status(
        generation=1, expected_hash="h1", deployment=deployment(conditions=[stuck]), previous=None
    )
    assert conds(got)[st.DEGRADED] == ("True", "ProgressDeadlineExceeded")
    assert got["lastFailure"]["message"] == "timed out"


def test_transition_time_moves_only_when_a_condition_flips() -> None:
    previous = st.reconciled_status(generation=1, expected_hash="h1", deployment=deployment(), previous=None)
    for c in previous["conditions"]:
        c["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    same = st.reconciled_status(generation=2, expected_hash="h1", deployment=deployment(), previous=previous)
    assert all(c["lastTransitionTime"] == "2000-01-01T00:00:00Z" for c in same["conditions"])
    ready = deployment(observedGeneration=2, updatedReplicas=1, readyReplicas=1)
    flipped = st.reconciled_status(generation=2, expected_hash="h1", deployment=ready, previous=previous)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times[st.READY] != "2000-01-01T00:00:00Z"
    assert times[st.DEGRADED] == "2000-01-01T00:00:00Z"  # still False


def test_a_spec_failure_keeps_the_promoted_condition_or_writes_the_gates_verdict() -> None:
    """The merge patch replaces the whole conditions list: a failure must carry Promoted along (kubectl's PROMOTED
    column reads it), as it was before the gate, or as the gate just decided."""
    promoted = {"type": st.PROMOTED, "status": "True", "reason": "Promoted", "message": "serving ab12",
                "lastTransitionTime": "2000-01-01T00:00:00Z"}  # fmt: skip
    failure = st.Failure("ModelObjectNotFound", "gone")
    kept = st.failed_status(generation=4, failure=failure, previous={"conditions": [promoted]}, during="spec")
    assert [c for c in kept["conditions"] if c["type"] == st.PROMOTED] == [promoted]
    verdict = Promotion(False, "PendingApproval", "approve it")
    gated = st.failed_status(generation=4, failure=failure, previous={"conditions": [promoted]}, promotion=verdict)
    assert conds(gated)[st.PROMOTED] == ("False", "PendingApproval")
    assert st.PROMOTED not in conds(st.failed_status(generation=1, failure=failure, previous=None))


def test_follower_leaves_a_spec_failure_alone_and_skips_no_op_writes() -> None:
    failed = st.failed_status(generation=3, failure=st.Failure("ModelNotInImage", "no such file"), previous=None)
    ready = deployment(observedGeneration=2, updatedReplicas=1, readyReplicas=1)
    assert st.spec_failure(failed) == st.Failure("ModelNotInImage", "no such file")
    assert st.followed_status(failed, ready) is None

    progressing = st.reconciled_status(generation=3, expected_hash="h1", deployment=deployment(), previous=None)
    fields = st.followed_status(progressing, ready)
    assert fields is not None and conds(fields)[st.READY] == ("True", "Available")
    assert st.followed_status({**progressing, **fields}, ready) is None  # nothing changed: no write
    assert st.spec_failure({**progressing, **fields}) is None
