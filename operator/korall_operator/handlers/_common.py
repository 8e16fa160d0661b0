"""What every handler module shares: resource names, the per-operator state in kopf's memo, error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from korall_contract import API_GROUP, API_VERSION

from korall_operator import status as st
from korall_operator.events import EventRecorder
from korall_operator.handlers._status_writes import StatusWriters
from korall_operator.k8s import ApiError, KubeClient, NotFound, namespace_terminating
from korall_operator.settings import OperatorSettings
from korall_operator.specs import SpecError
from korall_operator.status import Failure

API = f"{API_GROUP}/{API_VERSION}"
INFERENCE_MODELS = "inferencemodels"
CAPTURE_PROFILES = "captureprofiles"
MODEL_APPROVALS = "modelapprovals"
PLURALS = {"InferenceModel": INFERENCE_MODELS, "CaptureProfile": CAPTURE_PROFILES}
NOUNS = {"InferenceModel": "model", "CaptureProfile": "capture"}
"""How a status message names what a parent runs ("the model is healthy")."""

CAPTURE_PROFILE_SEEN = f"{API_GROUP}/capture-profile-seen"
"""Annotation the CaptureProfile handlers write on the InferenceModels that reference a profile (its uid and
generation, or `absent`), so that kopf runs their update handler: how a model waiting for a missing profile
recovers, and how a camera change rolls the vision pods out."""

RECONCILE_REQUESTED = f"{API_GROUP}/reconcile-requested"
"""Annotation written on a parent that must be reconciled again although its spec did not change (a child deleted
by hand, a CaptureProfile change whose poke was lost): kopf then runs its update handler. The value is a time."""

RETRY_DELAY_S = 15
"""Delay before kopf retries a reconcile that failed for a transient reason (API unavailable, 5xx)."""


@dataclass
class State:
    """What the operator keeps for its lifetime (kopf's `memo.korall`): settings read once, one API client, and
    the per-parent serialization of its own status writes."""

    settings: OperatorSettings
    kube: KubeClient
    writers: StatusWriters = field(default_factory=lambda: StatusWriters())
    events: EventRecorder = field(init=False)
    link_issuer: Any = None
    """presign.LinkIssuer, made on the first s3 model (handlers/model_links.py): boto3 is imported then only."""
    issued_links: Any = None
    """model_links.IssuedLinks: the link signed last for each s3 model, reused while fresh; made on first use."""

    def __post_init__(self) -> None:
        self.events = EventRecorder(self.kube)


def load_settings() -> OperatorSettings:
    """The operator's settings from the environment (the one place they are read; see settings.py)."""
    return OperatorSettings()


def state(memo: Any) -> State:
    value = getattr(memo, "korall", None)
    if not isinstance(value, State):
        raise kopf.TemporaryError("the operator is still starting up", delay=1)
    return value


def failure_of(exc: SpecError) -> Failure:
    return Failure(exc.reason, exc.message)


async def report_spec_failure(
    korall: State,
    body: kopf.Body,
    patch: kopf.Patch,
    exc: SpecError,
    *,
    generation: int,
    previous: Mapping[str, Any],
    logger: kopf.Logger,
    extra: Mapping[str, Any] | None = None,
    during: str | None = None,
    warn: bool = True,
) -> None:
    """A spec the operator cannot serve: Degraded status, a Warning Event and a log line (`warn`: not again for a
    failure that is retried and found the same); the handler then returns.

    Through kopf's patch: this status depends on no Deployment, and the child watchers leave a spec failure alone
    (their own writes are conditional, so they cannot put an older view over it either). `extra`: more status
    fields the handler records whatever the outcome (the CaptureProfile it saw); `during`: see
    status.waits_for_spec_change.
    """
    failure = failure_of(exc)
    patch.status.update(st.failed_status(generation=generation, failure=failure, previous=previous, during=during))
    patch.status.update(extra or {})
    if warn:
        await warn_spec_failure(korall, body, exc, logger)


async def warn_spec_failure(korall: State, body: kopf.Body, exc: SpecError, logger: kopf.Logger) -> None:
    """The Warning Event and the log line of a spec failure (aggregated: the same failure again counts up)."""
    await korall.events.record(body, "Warning", exc.reason, exc.message)
    logger.warning(f"not served: {exc.reason}: {exc.message}")


class NamespaceGoing(Exception):
    """The parent's namespace is being deleted, or is gone: nothing may be created there any more, and the parent
    goes with it. Not a failure: the handler stops quietly (deleting a namespace of 200 models must not log 200
    errors)."""


async def apply_children(
    kube: KubeClient, what: str, service: Mapping[str, Any], deployment: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply a Service and its Deployment; returns the Deployment as stored. A refusal of the API server is a
    SpecError (`rejected`), a terminating namespace NamespaceGoing, any other API failure a TemporaryError."""
    try:
        # Independent objects: applied together, the rollout starts one API round trip sooner.
        applied = await asyncio.gather(kube.apply(service), kube.apply(deployment))
        return applied[1]
    except ApiError as e:
        # Server-side apply creates what is missing, so a 404 can only mean the namespace itself is gone.
        if namespace_terminating(e) or isinstance(e, NotFound):
            raise NamespaceGoing(str(deployment["metadata"].get("namespace"))) from e
        raise (rejected(e, what) or transient(e, "applying the children")) from e


def rejected(exc: ApiError, what: str) -> SpecError | None:
    """A 400 or 422 from the API server on a child object: the spec produced something the cluster refuses.

    That is permanent until the spec changes (report it); anything else is transient: 5xx, 429, the network, and
    403 too (missing RBAC, a namespace being terminated, an admission quota), which a spec change cannot fix but
    the cluster's owner can, so it is retried after the delay and recovers without a restart.
    """
    if exc.status in (400, 422):
        return SpecError("ChildRejected", f"the API server refused the {what} (HTTP {exc.status}): {_message(exc)}")
    return None


def transient(exc: Exception, what: str) -> kopf.TemporaryError:
    """A failure that time may fix (5xx, 429, connection): kopf retries after RETRY_DELAY_S, not in a storm."""
    status = getattr(exc, "status", None)
    detail = f"HTTP {status}" if status else type(exc).__name__
    return kopf.TemporaryError(f"{what}: {detail}; retrying in {RETRY_DELAY_S} s", delay=RETRY_DELAY_S)


def _message(exc: ApiError) -> str:
    """The `message` of the API server's Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or "no message") if isinstance(body, dict) else str(exc.reason)


def deleted(type: str | None, **_: Any) -> bool:
    """A `when=` filter for event handlers that act on deletions only: kopf otherwise calls (and logs) them for
    every watch event of every object (five per InferenceModel created)."""
    return type == "DELETED"
