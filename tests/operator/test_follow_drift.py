"""follow.drift, the resync loop's decision, on the statuses the operator writes after a spec failure.

A failure found before the catalog's gate ran (`lastFailure.during: spec`) waits for a change of the spec: the
catalog's news (here an approval) cannot move it, and poking it would only warn again every round. A failure found
while applying the model the gate admitted (`rollout`: its S3 object is gone) must still hear that news: admitting
the approved model may clear it. The whole loop on a cluster: test_catalog.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from korall_operator import status as st
from korall_operator.catalog import Approval
from korall_operator.handlers.follow import Drift, drift
from korall_operator.handlers.indexes import Indexes, ParentView
from korall_operator.observed import parent_key

SHA = "ab" * 32


def stored(fields: Any) -> Any:
    """What a merge patch of `fields` leaves on an object that had no status: the None values are removals."""
    if isinstance(fields, dict):
        return {k: stored(v) for k, v in fields.items() if v is not None}
    return fields


def failed_model(during: str) -> ParentView:
    failure = st.Failure("ModelObjectNotFound", "s3://models/x.tflite does not exist")
    status = stored(st.failed_status(generation=3, failure=failure, previous={}, during=during))
    status["catalog"] = {  # a newer model passed validation and waits for someone else's approval
        "sha256": SHA,
        "fourEyes": True,
        "requestedBy": "bob",
        "promotion": {"promoted": False, "reason": "PendingApproval", "message": "approve it", "degraded": False},
    }
    return ParentView("InferenceModel", "ns", "yard", "uid-1", 3, status)


def indexes(view: ParentView, approvals: list[Approval]) -> Indexes:
    empty: dict[Any, Any] = {}
    return Indexes(
        deployments=empty,
        pod_problems=empty,
        models={("InferenceModel", "ns", "yard"): [view]},
        profiles=empty,
        models_by_profile=empty,
        approvals={("ns", "yard"): approvals},
    )


@pytest.mark.parametrize(("during", "expected"), [("spec", None), ("rollout", Drift.RECONCILE)])
def test_an_approval_reaches_a_failed_model_only_when_the_catalog_can_clear_its_failure(
    during: str, expected: Drift | None
) -> None:
    view = failed_model(during)
    assert st.spec_failure(view.status) is not None and view.status["lastFailure"]["during"] == during
    assert drift(view, indexes(view, [])) is None  # nothing new: left alone either way
    assert drift(view, indexes(view, [Approval("a1", "yard", SHA, "alice")])) is expected


def test_a_later_failure_of_another_kind_does_not_keep_an_earlier_during() -> None:
    """lastFailure is written whole: a rollout failure after a spec failure removes `during` in the merge patch."""
    spec_failed = stored(st.failed_status(generation=1, failure=st.Failure("X", "x"), previous={}, during="spec"))
    later = st.last_failure("CrashLoopBackOff", "the pod crashed")
    merged = stored({**spec_failed["lastFailure"], **later})
    assert "during" not in merged and merged["reason"] == "CrashLoopBackOff"


def test_a_missing_child_service_is_drift_like_a_missing_deployment() -> None:
    """A reconciled model whose Deployment is there but whose Service is not is reconciled again (the apply
    creates it); with both there, and its status in line with the Deployment, nothing is to be done."""
    deployment = {"metadata": {"name": "yard-vision", "generation": 1, "annotations": {}},
                  "spec": {"replicas": 1}, "status": {}}  # fmt: skip
    status = stored(st.reconciled_status(generation=3, expected_hash="h1", deployment=deployment, previous={},
                                         noun="model", problem=None))  # fmt: skip
    view = ParentView("InferenceModel", "ns", "yard", "uid-1", 3, status)
    key = parent_key("InferenceModel", "ns", "yard")
    both = Indexes(
        deployments={key: [deployment]},
        pod_problems={},
        models={("InferenceModel", "ns", "yard"): [view]},
        profiles={},
        models_by_profile={},
        services={key: ["yard-vision"]},
    )
    assert drift(view, both) is None
    assert drift(view, dataclasses.replace(both, services={})) is Drift.RECONCILE
    assert drift(view, dataclasses.replace(both, deployments={})) is Drift.RECONCILE


def test_a_running_validation_whose_job_is_gone_is_drift_and_an_error() -> None:
    """The level-triggered half of a deleted validation Job (its deletion event may be lost): a Running record whose
    Job the index no longer has gets the model reconciled, and the reconcile records it as an Error. Not while the
    Job may be merely unseen yet (the watch lags behind the status write that recorded it)."""
    import time

    from korall_operator.catalog.records import now_iso
    from korall_operator.handlers.indexes import JOB_UNSEEN_GRACE_S
    from korall_operator.handlers.validation import finish_known

    now = time.time()
    job = "yard-validate-ab-1"

    def model(started: float) -> ParentView:
        promotion = {"promoted": False, "reason": "PendingValidation", "message": "validating", "degraded": False}
        status: dict[str, Any] = {
            "observedGeneration": 3,
            "catalog": {"sha256": SHA, "config": "c1", "promotion": promotion},
        }
        status["validations"] = [{"sha256": SHA, "config": "c1", "state": "Running", "job": job, "generation": 3,
                                  "startedAt": now_iso(started), "timeoutSeconds": 900.0}]  # fmt: skip
        return ParentView("InferenceModel", "ns", "yard", "uid-1", 3, status)

    old, new = model(now - JOB_UNSEEN_GRACE_S - 5), model(now - 5)
    with_job = dataclasses.replace(indexes(old, []), jobs={("ns", job): ["job-uid"]})
    without = dataclasses.replace(indexes(old, []), jobs={})
    assert drift(old, with_job) is None
    assert drift(new, dataclasses.replace(without, models={("InferenceModel", "ns", "yard"): [new]})) is None
    assert drift(old, without) is Drift.RECONCILE
    assert finish_known(old.status, with_job, "ns", now) == []
    assert finish_known(new.status, without, "ns", now) == []
    (record,) = finish_known(old.status, without, "ns", now)
    assert (record.state, record.reason, record.job) == ("Error", "ValidationJobGone", job)
    # Indexes built without the Job index (a caller of its own) never take a Job for gone.
    assert finish_known(old.status, indexes(old, []), "ns", now) == []
