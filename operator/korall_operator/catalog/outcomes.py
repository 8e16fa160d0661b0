"""How a validation ended, read from its Job's pod or from the Job itself (pure).

The validator (`python -m korall_workloads.validate`) ends with one JSON object as its termination message
(korall_contract.VALIDATION_RESULT_SCHEMA), which the kubelet copies into the pod's status: the operator reads it
there, from the pod watch it has anyway. A pod can also end without that word: a model-fetch init container that
failed (`ModelDownloadFailed: <Reason>: ...`), a validator killed (OOMKilled) or evicted; and a Job can fail with
no pod to tell (its activeDeadlineSeconds). Each becomes an outcome: `Failed` when the model itself was found
wrong (a download whose bytes do not match the sha256 is a model found wrong), `Error` when it could not be judged.

Each outcome names the Job it is of by uid (`job_uid`: a pod's controlling owner): a name is not enough, since a Job
of the same name may be a predecessor's (an InferenceModel deleted and created again), whose pods can outlive it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from korall_contract import MODEL_DOWNLOAD_FAILED, VALIDATION_RESULT_SCHEMA

from korall_operator.catalog.records import ValidationRecord, ValidationState, now_iso

VALIDATOR_CONTAINER = "validate"
_REASON_LINE = re.compile(rf"^{MODEL_DOWNLOAD_FAILED}: ([A-Z][A-Za-z0-9]+): (.+)$", re.DOTALL)
MODEL_FOUND_WRONG = frozenset({"ChecksumMismatch", "SizeLimitExceeded"})
"""Download failures that judge the model itself (anything else only says it could not be fetched)."""


@dataclass(frozen=True)
class Outcome:
    state: ValidationState
    reason: str
    message: str
    duration_s: float | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    job_uid: str = ""  # the Job it is the outcome of ("" when not known)

    def finish(self, record: ValidationRecord, now: float) -> ValidationRecord:
        return replace(
            record,
            state=self.state,
            finished_at=now_iso(now),
            duration_s=self.duration_s,
            reason=self.reason,
            message=self.message[:1024],
            checks=self.checks,
            images=self.images,
        )


def parse_result(text: str, sha256: str | None = None) -> Outcome | None:
    """The validator's JSON result, or None when `text` is not one (for this sha256, when given)."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("schema") != VALIDATION_RESULT_SCHEMA:
        return None
    if body.get("result") not in ("Passed", "Failed", "Error"):
        return None
    if sha256 is not None and body.get("sha256") != sha256:
        return Outcome("Error", "WrongModel", f"the validator judged sha256 {body.get('sha256')}, not {sha256}")
    duration = body.get("durationSeconds")
    images = [i for i in body.get("images") or [] if isinstance(i, dict)]
    return Outcome(
        state=body["result"],
        reason=str(body.get("reason") or body["result"]),
        message=str(body.get("message") or ""),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        checks=dict(body.get("checks") or {}) if isinstance(body.get("checks"), dict) else {},
        images=images + ([{"omitted": body["omitted"]}] if body.get("omitted") else []),
    )


def _terminated(container: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = container.get("state") or {}
    return state.get("terminated") or None


JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
"""The Job controller's label on each pod of a Job: the Job's uid (kept on a pod orphaned from its Job)."""


def controlling_job_uid(pod: Mapping[str, Any]) -> str:
    """The uid of the Job a pod belongs to: its controller ownerReference of kind Job, else the Job controller's
    label (an orphaned pod keeps it); "" for a pod no Job made."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return str(ref.get("uid") or "")
    return str((meta.get("labels") or {}).get(JOB_UID_LABEL) or "")


def outcome_of_pod(pod: Mapping[str, Any], sha256: str | None = None) -> Outcome | None:
    """The outcome a validation pod reports once it has ended, of the Job that controls it; None while it runs."""
    outcome = _ended_pod(pod, sha256)
    return replace(outcome, job_uid=controlling_job_uid(pod)) if outcome is not None else None


def _ended_pod(pod: Mapping[str, Any], sha256: str | None) -> Outcome | None:
    status = pod.get("status") or {}
    for init in status.get("initContainerStatuses") or []:
        ended = _terminated(init) or ((init.get("lastState") or {}).get("terminated") or None)
        if ended and int(ended.get("exitCode") or 0) != 0:
            text = str(ended.get("message") or "").strip()
            found = _REASON_LINE.match(text)
            if found:
                word = found.group(1)
                state: ValidationState = "Failed" if word in MODEL_FOUND_WRONG else "Error"
                return Outcome(state, word, f"{init.get('name')}: {found.group(2)}")
            if status.get("phase") == "Failed":
                return Outcome("Error", "InitContainerFailed", f"{init.get('name')} exited {ended.get('exitCode')}")
    for container in status.get("containerStatuses") or []:
        if container.get("name") != VALIDATOR_CONTAINER:
            continue
        ended = _terminated(container)
        if ended is None:
            return None
        outcome = parse_result(str(ended.get("message") or ""), sha256)
        code = int(ended.get("exitCode") or 0)
        if outcome is not None and outcome.state == "Passed" and code != 0:  # the two must agree to pass
            how = f"exited {code} ({ended.get('reason') or 'Error'})"
            return Outcome("Error", "ValidatorCrashed", f"the validator wrote a Passed result, then {how}: not a pass")
        if outcome is not None:
            return outcome
        detail = str(ended.get("message") or "").strip()[-300:]
        return Outcome(
            "Error",
            "ValidatorCrashed",
            f"the validator exited {ended.get('exitCode')} ({ended.get('reason') or 'Error'}) without a result"
            + (f": {detail}" if detail else ""),
        )
    if status.get("phase") == "Failed":  # evicted, or its node lost: no container says anything
        return Outcome("Error", str(status.get("reason") or "PodFailed"), str(status.get("message") or "pod failed"))
    return None


def outcome_of_job(job: Mapping[str, Any]) -> Outcome | None:
    """A Job that failed as a whole (its deadline passed, its pod gone); None otherwise (its pod tells the rest)."""
    uid = str((job.get("metadata") or {}).get("uid") or "")
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            reason = str(cond.get("reason") or "JobFailed")
            message = str(cond.get("message") or "the validation Job failed")
            word = "ValidationTimedOut" if reason == "DeadlineExceeded" else reason
            return Outcome("Error", word, message, job_uid=uid)
    return None
