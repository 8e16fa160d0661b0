"""kopf indexes: what the operator knows of the cluster, kept current by kopf's watches (relisted after any gap).

Every status the operator writes and every drift the resync loop looks for is computed from these, in memory,
without an API call: the child Deployments, Services and the troubles of their Pods by parent, the parents themselves,
which InferenceModels use which CaptureProfile, and the ModelApprovals of each InferenceModel (the catalog's
gate). Each index keeps a small view (observed.py), not whole bodies.

kopf fills an index before it calls any other handler with the same event, and passes the indexes to every handler
as keyword arguments named like the functions below. An index function returns `{}`, never None, for an object that
contributes nothing: kopf keeps an object's previous contribution when its function returns None, so a pod that
recovered would stay listed with its old problem.

The index functions are `async def` although they never await: kopf runs a plain `def` handler in its thread pool,
and with eight indexes over every Pod and Deployment event that hand-over was an eighth of the operator's CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from korall_operator.camera_use import camera_in_use
from korall_operator.catalog import Approval, Outcome, outcome_of_job, outcome_of_pod
from korall_operator.catalog.records import ValidationRecord, epoch, slim_status
from korall_operator.handlers._common import API, CAPTURE_PROFILES, INFERENCE_MODELS, MODEL_APPROVALS
from korall_operator.manifests import MANAGED_BY
from korall_operator.manifests.validation import COMPONENT as VALIDATION_COMPONENT
from korall_operator.manifests.validation import JOB_ANNOTATION, SHA256_ANNOTATION
from korall_operator.observed import ChildKey, PodProblem, child_key, parent_key, pod_problem, slim_deployment

GROUP, VERSION = API.split("/")
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
VALIDATION = {**MANAGED, "app.kubernetes.io/component": VALIDATION_COMPONENT}

ParentKey = tuple[str, str, str]
"""(kind, namespace, name) of an InferenceModel or CaptureProfile."""


@dataclass(frozen=True)
class ParentView:
    """What the resync loop needs of a parent: identity, generation, its status, its CaptureProfile reference."""

    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    status: dict[str, Any]
    capture_profile: str | None = None  # InferenceModel: spec.captureProfileRef.name
    deleting: bool = False


def _view(kind: str, body: kopf.Body, capture_profile: str | None = None) -> ParentView:
    meta = body.get("metadata") or {}
    return ParentView(
        kind=kind,
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 1),
        status=slim_status(body.get("status") or {}),  # what people only read stays out of memory
        capture_profile=capture_profile,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def profile_ref(spec: Any) -> str | None:
    ref = (spec or {}).get("captureProfileRef") or {}
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) and name else None


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployments_by_parent(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    key = child_key(body)
    return {key: slim_deployment(body)} if key is not None else {}


@kopf.index("", "v1", "services", labels=MANAGED)
async def services_by_parent(body: kopf.Body, **_: Any) -> dict[ChildKey, str]:
    """The child Services, by name only: that one exists is all the operator needs (a deleted one is applied
    again, follow.drift)."""
    key = child_key(body)
    return {key: str((body.get("metadata") or {}).get("name"))} if key is not None else {}


@kopf.index("", "v1", "pods", labels=MANAGED)
async def pod_problems_by_parent(body: kopf.Body, **_: Any) -> dict[ChildKey, PodProblem]:
    """Only the pods with a problem are kept: a healthy fleet costs nothing here."""
    key = child_key(body)
    problem = pod_problem(body) if key is not None else None
    return {key: problem} if key is not None and problem is not None else {}


@kopf.index(GROUP, VERSION, INFERENCE_MODELS)
async def inference_models(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[ParentKey, ParentView]:
    view = _view("InferenceModel", body, profile_ref(spec))
    return {(view.kind, view.namespace, view.name): view}


@kopf.index(GROUP, VERSION, CAPTURE_PROFILES)
async def capture_profiles(body: kopf.Body, **_: Any) -> dict[ParentKey, ParentView]:
    view = _view("CaptureProfile", body)
    return {(view.kind, view.namespace, view.name): view}


@kopf.index(GROUP, VERSION, INFERENCE_MODELS)
async def inference_models_by_capture_profile(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str]:
    """(namespace, CaptureProfile name) -> the InferenceModels that reference it."""
    profile = profile_ref(spec)
    return {(namespace or "", profile): name} if profile else {}


@kopf.index(GROUP, VERSION, MODEL_APPROVALS)
async def approvals_by_model(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], Approval]:
    """(namespace, InferenceModel name) -> its ModelApprovals (immutable: each is what it was when created)."""
    meta = body.get("metadata") or {}
    model, sha, by = spec.get("inferenceModel"), spec.get("sha256"), spec.get("approvedBy")
    if not (isinstance(model, str) and isinstance(sha, str) and isinstance(by, str)) or meta.get("deletionTimestamp"):
        return {}
    approval = Approval(str(meta.get("name")), model, sha, by, str(meta.get("creationTimestamp") or ""))
    return {(str(meta.get("namespace") or ""), model): approval}


@kopf.index("", "v1", "pods", labels=VALIDATION)
async def validation_pod_outcomes(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Outcome]:
    """(namespace, validation Job) -> how its pods ended (each outcome names its Job's uid); only pods that have
    ended are kept."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    job = annotations.get(JOB_ANNOTATION)
    outcome = outcome_of_pod(body, annotations.get(SHA256_ANNOTATION)) if job else None
    return {(str(meta.get("namespace") or ""), str(job)): outcome} if outcome is not None else {}


@kopf.index("batch", "v1", "jobs", labels=VALIDATION)
async def validation_job_outcomes(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Outcome]:
    """(namespace, validation Job) -> how it failed as a whole (its deadline passed), if it did."""
    meta = body.get("metadata") or {}
    outcome = outcome_of_job(body)
    return {(str(meta.get("namespace") or ""), str(meta.get("name"))): outcome} if outcome is not None else {}


@kopf.index("batch", "v1", "jobs", labels=VALIDATION)
async def validation_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, validation Job) -> its uid: which validation Jobs exist (a Running record whose Job is gone will
    never hear an outcome: Indexes.validation_job_gone)."""
    meta = body.get("metadata") or {}
    return {(str(meta.get("namespace") or ""), str(meta.get("name"))): str(meta.get("uid"))}


@dataclass(frozen=True)
class RunningJob:
    """A validation Job that has not ended: what is needed to stop it once a newer spec supersedes it."""

    name: str
    uid: str
    sha256: str


@kopf.index("batch", "v1", "jobs", labels=VALIDATION)
async def running_validation_jobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], RunningJob]:
    """(namespace, owner's uid) -> the validation Jobs of an InferenceModel that run: no Complete or Failed
    condition, not being deleted."""
    meta = body.get("metadata") or {}
    owner = next((str(r.get("uid")) for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    conditions = (body.get("status") or {}).get("conditions") or []
    ended = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
    if owner is None or ended or meta.get("deletionTimestamp"):
        return {}
    job = RunningJob(str(meta.get("name")), str(meta.get("uid")), str((meta.get("annotations") or {}).get(
        SHA256_ANNOTATION, "")))  # fmt: skip
    return {(str(meta.get("namespace") or ""), owner): job}


JOB_UNSEEN_GRACE_S = 60.0
"""How long after a validation started its Job may still be unknown to the index (the Job's watch event may come
after the status write that recorded it) before the validation counts as gone."""


def first(index: kopf.Index[Any, Any], key: Any) -> Any | None:
    """The one value an index holds for a key (each parent has one child Deployment), or None."""
    store = index.get(key)
    return next(iter(store), None) if store else None


@dataclass(frozen=True)
class Indexes:
    """The indexes above, as one argument (kopf passes them to handlers as keyword arguments)."""

    deployments: kopf.Index[ChildKey, dict[str, Any]]
    pod_problems: kopf.Index[ChildKey, PodProblem]
    models: kopf.Index[ParentKey, ParentView]
    profiles: kopf.Index[ParentKey, ParentView]
    models_by_profile: kopf.Index[tuple[str, str], str]
    # Empty by default for callers that build the indexes themselves (tests of other concerns).
    services: kopf.Index[ChildKey, str] = field(default_factory=lambda: cast(Any, {}))
    approvals: kopf.Index[tuple[str, str], Approval] = field(default_factory=lambda: cast(Any, {}))
    pod_outcomes: kopf.Index[tuple[str, str], Outcome] = field(default_factory=lambda: cast(Any, {}))
    job_outcomes: kopf.Index[tuple[str, str], Outcome] = field(default_factory=lambda: cast(Any, {}))
    jobs: kopf.Index[tuple[str, str], str] | None = None  # None: not known (then no Job is ever taken for gone)
    running_jobs: kopf.Index[tuple[str, str], RunningJob] = field(default_factory=lambda: cast(Any, {}))

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> Indexes:
        return cls(
            deployments=kwargs["deployments_by_parent"],
            pod_problems=kwargs["pod_problems_by_parent"],
            models=kwargs["inference_models"],
            profiles=kwargs["capture_profiles"],
            models_by_profile=kwargs["inference_models_by_capture_profile"],
            services=kwargs["services_by_parent"],
            # The catalog's indexes: absent only where a caller builds the kwargs itself (a direct handler test);
            # kopf always passes every index to every handler.
            approvals=kwargs.get("approvals_by_model", {}),
            pod_outcomes=kwargs.get("validation_pod_outcomes", {}),
            job_outcomes=kwargs.get("validation_job_outcomes", {}),
            jobs=kwargs.get("validation_jobs"),
            running_jobs=kwargs.get("running_validation_jobs", {}),
        )

    def has_service(self, kind: str, namespace: str, name: str) -> bool:
        """Whether the parent's child Service exists."""
        return first(self.services, parent_key(kind, namespace, name)) is not None

    def validation_outcome(self, namespace: str, job: str, job_uid: str = "") -> Outcome | None:
        """How validation Job `job` ended, as its pod (first) or the Job itself says; None while it runs. With
        `job_uid`, only that Job's: a pod left over from a predecessor's Job of the same name says nothing of it."""
        for index in (self.pod_outcomes, self.job_outcomes):
            found = next((o for o in index.get((namespace, job)) or () if not job_uid or o.job_uid == job_uid), None)
            if found is not None:
                return found
        return None

    def validation_job_gone(self, namespace: str, record: ValidationRecord, now: float) -> bool:
        """A Running validation whose Job no longer exists (deleted by someone, or never made) and which has no
        outcome: it will never report. Not before JOB_UNSEEN_GRACE_S after it started (the watch may lag)."""
        if self.jobs is None or record.state != "Running":
            return False
        if any(record.is_of(uid) for uid in self.jobs.get((namespace, record.job)) or ()):
            return False
        started = epoch(record.started_at)
        return (
            started is not None
            and now > started + JOB_UNSEEN_GRACE_S
            and not self.validation_outcome(namespace, record.job, record.job_uid)
        )

    def superseded_validation_jobs(self, namespace: str, owner_uid: str, keep: str | None) -> list[RunningJob]:
        """The validation Jobs of an InferenceModel that still run (their pod has not ended either), other than
        `keep`, the Job of the validation its spec asks for now: a newer spec has made them pointless."""
        jobs = self.running_jobs.get((namespace, owner_uid)) or ()
        return sorted(
            (j for j in jobs if j.name != keep and not self.validation_outcome(namespace, j.name, j.uid)),
            key=lambda j: j.name,
        )

    def approvals_of(self, namespace: str, model: str) -> list[Approval]:
        """The ModelApprovals of an InferenceModel, oldest first."""
        return sorted(self.approvals.get((namespace, model), []), key=lambda a: (a.created, a.name))

    def parent(self, kind: str, namespace: str, name: str) -> ParentView | None:
        index = self.models if kind == "InferenceModel" else self.profiles
        return first(index, (kind, namespace, name))

    def children(self, kind: str, namespace: str, name: str) -> tuple[dict[str, Any] | None, PodProblem | None]:
        """The parent's child Deployment (slim) and the problem of one of its pods, if any (a pod waiting for a
        camera another model holds: CameraInUse, naming it)."""
        key = parent_key(kind, namespace, name)
        deployment, problem = first(self.deployments, key), first(self.pod_problems, key)
        if problem is not None and problem.camera is not None and kind == "InferenceModel":
            problem = self._camera_problem(namespace, name, deployment, problem)
        return deployment, problem

    def _camera_problem(
        self, namespace: str, name: str, deployment: dict[str, Any] | None, problem: PodProblem
    ) -> PodProblem:
        """CameraInUse when the camera's holder is known: another model of the same CaptureProfile whose pods
        exist and do not wait for the camera themselves, or another replica of this model. Else the scheduler's
        word stands (the camera is held by something korall does not know of, e.g. another namespace's pod)."""
        view = self.parent("InferenceModel", namespace, name)
        profile = view.capture_profile if view is not None else None
        if profile is None:
            return problem
        holders = [m for m in self.used_by(namespace, profile) if m != name and self._holds_camera(namespace, m)]
        own = (deployment or {}).get("status") or {}
        if holders or (int(own.get("replicas", 0)) > 1 and int(own.get("readyReplicas", 0)) >= 1):
            return camera_in_use(problem, profile, holders)
        return problem

    def _holds_camera(self, namespace: str, model: str) -> bool:
        key = parent_key("InferenceModel", namespace, model)
        deployment, problem = first(self.deployments, key), first(self.pod_problems, key)
        pods = int(((deployment or {}).get("status") or {}).get("replicas", 0))
        return pods > 0 and (problem is None or problem.camera is None)

    def used_by(self, namespace: str, profile: str) -> list[str]:
        """The InferenceModels that reference this CaptureProfile, sorted."""
        return sorted(set(self.models_by_profile.get((namespace, profile), [])))
