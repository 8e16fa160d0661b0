"""What the catalog keeps in an InferenceModel's status, as typed records (pure: dicts in, dicts out).

- a model reference (`ModelRef`): a sha256, where it comes from, the stage it was admitted at and the *gated* part
  of the spec it was admitted with (`GATED_FIELDS`: what the model is, and how it is validated). The reconcile
  applies the serving model's gated fields over the spec, so the Deployment keeps running the model that was
  admitted while a new one waits; every other field (replicas, thresholds, camera, resources) applies at once;
- a validation record per model and validation settings (`ValidationRecord`), from the validator's JSON result;
- an approval, as the operator's index of ModelApprovals holds it (`Approval`);
- history entries (`history_entry`), the last HISTORY_LIMIT kept.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

GATED_FIELDS = ("model", "labels", "accelerator", "tpuInterface", "validation")
"""The spec fields that say which model runs and how it is validated: held back together while a new model waits."""

VALIDATION_INPUTS = ("labels", "accelerator")
"""Besides the sha256 and spec.validation's golden set and twin: what else a validation's verdict depends on."""

HISTORY_LIMIT = 20
VALIDATIONS_LIMIT = 10
DEFAULT_VALIDATION_TIMEOUT_S = 900.0
VALIDATION_GRACE_S = 120.0
"""How much longer than its Job's deadline a validation may stay without a result before the gate calls it an
Error (the Job's own Failed condition normally says so first)."""

ValidationState = Literal["Running", "Passed", "Failed", "Error"]


def now_iso(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def digest(value: Any, length: int = 12) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def gated_part(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The gated fields of a spec (camelCase, as the CR has them)."""
    return {k: spec[k] for k in GATED_FIELDS if k in spec}


def validation_config(spec: Mapping[str, Any]) -> str:
    """A short digest of what a validation's verdict depends on besides the sha256: labels, accelerator, the golden
    set and the CPU twin. The same model validated under other settings is validated again."""
    validation = spec.get("validation") or {}
    inputs = {k: spec.get(k) for k in VALIDATION_INPUTS}
    inputs.update(goldenSet=validation.get("goldenSet"), cpuTwin=validation.get("cpuTwin"))
    return digest(inputs, 8)


@dataclass(frozen=True)
class ModelRef:
    """A model as admitted (or asked for): its checksum, source, stage and gated spec fields."""

    sha256: str
    source: str
    stage: str
    spec: dict[str, Any]
    approved_by: str = ""
    since: str = ""

    @property
    def short(self) -> str:
        return self.sha256[:12]

    @property
    def key(self) -> str:
        """Identity of what the pods run: the sha256 and the gated fields (a new golden set is a new rollout)."""
        return digest([self.sha256, self.spec])

    def as_status(self) -> dict[str, Any]:
        out = {"sha256": self.sha256, "shortSha": self.short, "source": self.source, "stage": self.stage,
               "spec": self.spec, "key": self.key}  # fmt: skip
        if self.approved_by:
            out["approvedBy"] = self.approved_by
        if self.since:
            out["since"] = self.since
        return out

    @classmethod
    def from_status(cls, value: Any) -> ModelRef | None:
        if not isinstance(value, Mapping) or not value.get("sha256") or not isinstance(value.get("spec"), Mapping):
            return None
        return cls(
            sha256=str(value["sha256"]),
            source=str(value.get("source", "")),
            stage=str(value.get("stage", "test")),
            spec=dict(value["spec"]),
            approved_by=str(value.get("approvedBy", "")),
            since=str(value.get("since", "")),
        )


@dataclass(frozen=True)
class Approval:
    """One ModelApproval, as the operator's index keeps it."""

    name: str
    model: str  # the InferenceModel's name
    sha256: str
    approved_by: str
    created: str = ""


@dataclass(frozen=True)
class ValidationRecord:
    sha256: str
    config: str
    state: ValidationState
    job: str
    generation: int
    started_at: str
    finished_at: str = ""
    duration_s: float | None = None
    reason: str = ""
    message: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    timeout_s: float | None = None  # the Job's activeDeadlineSeconds
    job_uid: str = ""  # the Job's uid: only its own outcome finishes the record ("": written before it was kept)

    @property
    def done(self) -> bool:
        return self.state != "Running"

    def is_of(self, job_uid: str) -> bool:
        """Whether an outcome of the Job with this uid is this record's (a record that does not know its Job's uid
        takes any Job's of its name, as before it was kept)."""
        return not self.job_uid or self.job_uid == job_uid

    def overdue(self, now: float) -> bool:
        """Still Running well past its Job's deadline (VALIDATION_GRACE_S more): it will not report any more."""
        started = epoch(self.started_at)
        limit = (self.timeout_s or DEFAULT_VALIDATION_TIMEOUT_S) + VALIDATION_GRACE_S
        return self.state == "Running" and started is not None and now > started + limit

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sha256": self.sha256,
            "config": self.config,
            "state": self.state,
            "job": self.job,
            "generation": self.generation,
            "startedAt": self.started_at,
        }
        optional = {
            "finishedAt": self.finished_at, "durationSeconds": self.duration_s, "reason": self.reason,
            "message": self.message, "checks": self.checks, "images": self.images, "timeoutSeconds": self.timeout_s,
            "jobUid": self.job_uid,
        }  # fmt: skip
        out.update({k: v for k, v in optional.items() if v not in ("", None, {}, [])})
        return out

    @classmethod
    def from_status(cls, value: Any) -> ValidationRecord | None:
        if not isinstance(value, Mapping) or not value.get("sha256") or value.get("state") not in (
            "Running", "Passed", "Failed", "Error",
        ):  # fmt: skip
            return None
        duration, timeout = value.get("durationSeconds"), value.get("timeoutSeconds")
        return cls(
            sha256=str(value["sha256"]),
            config=str(value.get("config", "")),
            state=value["state"],
            job=str(value.get("job", "")),
            generation=int(value.get("generation") or 0),
            started_at=str(value.get("startedAt", "")),
            finished_at=str(value.get("finishedAt", "")),
            duration_s=float(duration) if isinstance(duration, int | float) else None,
            reason=str(value.get("reason", "")),
            message=str(value.get("message", "")),
            checks=dict(value.get("checks") or {}),
            images=list(value.get("images") or []),
            timeout_s=float(timeout) if isinstance(timeout, int | float) else None,
            job_uid=str(value.get("jobUid") or ""),
        )


def records(status: Mapping[str, Any]) -> list[ValidationRecord]:
    found = (ValidationRecord.from_status(v) for v in status.get("validations") or [])
    return [r for r in found if r is not None]


def record_for(status: Mapping[str, Any], sha256: str, config: str) -> ValidationRecord | None:
    """The latest validation of this model under these settings."""
    matching = [r for r in records(status) if r.sha256 == sha256 and r.config == config]
    return matching[-1] if matching else None


def with_record(status: Mapping[str, Any], record: ValidationRecord) -> list[dict[str, Any]]:
    """status.validations with `record` in place of the one of the same model and settings, newest last, bounded."""
    kept = [r for r in records(status) if (r.sha256, r.config) != (record.sha256, record.config)]
    return [r.as_status() for r in [*kept, record][-VALIDATIONS_LIMIT:]]


def history_entry(
    event: str, ref: ModelRef, now: float, *, validation: str = "", approved_by: str = "", message: str = ""
) -> dict[str, Any]:
    entry = {"time": now_iso(now), "event": event, "sha256": ref.sha256, "source": ref.source, "stage": ref.stage}
    for key, value in (("validation", validation), ("approvedBy", approved_by), ("message", message[:300])):
        if value:
            entry[key] = value
    return entry


def appended(history: Sequence[Mapping[str, Any]] | None, entries: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The history with `entries` appended, the last HISTORY_LIMIT kept."""
    return [dict(e) for e in [*(history or []), *entries]][-HISTORY_LIMIT:]


def slim_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status without what only people read (the history, image outcomes, the admitted models' spec fields): what
    the operator keeps in memory of each InferenceModel (its index), enough for the gate's `attention()` and the
    follow-ups. A thousand models hold a thousand of these."""
    out = {k: v for k, v in status.items() if k != "history"}
    if isinstance(status.get("validations"), list):
        keep = ("sha256", "config", "state", "job", "jobUid", "generation", "startedAt", "timeoutSeconds")
        out["validations"] = [{k: v[k] for k in keep if k in v} for v in status["validations"] if isinstance(v, dict)]
    catalog = status.get("catalog")
    if isinstance(catalog, Mapping):
        slim = dict(catalog)
        for ref in ("serving", "lastGood"):
            if isinstance(catalog.get(ref), Mapping):
                slim[ref] = {k: v for k, v in catalog[ref].items() if k != "spec"}
        out["catalog"] = slim
    return out
