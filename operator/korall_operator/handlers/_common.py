"""What every handler module shares: resource names, the per-operator state in kopf's memo, error mapping."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
from korall_contract import API_GROUP, API_VERSION
from kubernetes_asyncio.client.exceptions import ApiException

from korall_operator import status as st
from korall_operator.k8s import Conflict, KubeClient, NotFound
from korall_operator.settings import OperatorSettings
from korall_operator.specs import SpecError
from korall_operator.status import Failure

API = f"{API_GROUP}/{API_VERSION}"
INFERENCE_MODELS = "inferencemodels"
CAPTURE_PROFILES = "captureprofiles"
PLURALS = {"InferenceModel": INFERENCE_MODELS, "CaptureProfile": CAPTURE_PROFILES}

CAPTURE_PROFILE_SEEN = f"{API_GROUP}/capture-profile-seen"
"""Annotation the CaptureProfile handlers write on the InferenceModels that reference a profile (its uid and
generation, or `absent`), so that kopf runs their update handler: how a model waiting for a missing profile
recovers, and how a camera change rolls the vision pods out."""

RECONCILE_REQUESTED = f"{API_GROUP}/reconcile-requested"
"""Annotation the Deployment follower writes on a parent whose child Deployment was deleted by hand (the uid of the
deleted child): the parent's update handler runs and applies the child again."""

RETRY_DELAY_S = 15
"""Delay before kopf retries a reconcile that failed for a transient reason (API unavailable, 5xx)."""

STATUS_ATTEMPTS = 3
"""Reads of the parent before a conditional status write gives up (see `write_status`)."""


@dataclass
class State:
    """What the operator keeps for its lifetime (kopf's `memo.korall`): settings read once, one API client."""

    settings: OperatorSettings
    kube: KubeClient


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


def report_spec_failure(
    body: kopf.Body,
    patch: kopf.Patch,
    exc: SpecError,
    *,
    generation: int,
    previous: Mapping[str, Any],
    logger: kopf.Logger,
) -> None:
    """A spec the operator cannot serve: Degraded status, a Warning Event, a log line; the handler then returns.

    Through kopf's patch: this status depends on no Deployment, and the follower leaves a spec failure alone.
    """
    failure = failure_of(exc)
    patch.status.update(st.failed_status(generation=generation, failure=failure, previous=previous))
    kopf.warn(body, reason=failure.reason, message=failure.message)
    logger.warning(f"not served: {failure.reason}: {failure.message}")


async def apply_children(
    kube: KubeClient, what: str, service: Mapping[str, Any], deployment: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply a Service and its Deployment; returns the Deployment as stored. A refusal of the API server is a
    SpecError (`rejected`), any other API failure a TemporaryError (`transient`)."""
    try:
        await kube.apply(service)
        return await kube.apply(deployment)
    except ApiException as e:
        raise (rejected(e, what) or transient(e, "applying the children")) from e


def rejected(exc: ApiException, what: str) -> SpecError | None:
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


def _message(exc: ApiException) -> str:
    """The `message` of the API server's Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or "no message") if isinstance(body, dict) else str(exc.reason)


StatusOf = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any] | None]]


async def write_status(
    kube: KubeClient,
    plural: str,
    namespace: str,
    name: str,
    uid: str,
    status_of: StatusOf,
    parent: Mapping[str, Any] | None = None,
) -> tuple[Mapping[str, Any], dict[str, Any]] | None:
    """Write `status_of(parent)` as the parent's status, on condition that the parent did not change meanwhile.

    Two writers share a parent's status (the reconcile handler, the Deployment follower), each computing it from
    the Deployment as it saw it. kopf runs them concurrently, so an unconditional write could put an older view
    over a newer one, and no later event would correct it. With the parent's resourceVersion as a precondition,
    the writer that lost the race reads the parent again and recomputes. Starts from `parent` when given (kopf's
    body), else reads it. Returns (the parent as read, the fields written), or None when there was nothing to
    write or the parent is gone or replaced (another uid). Raises Conflict if it kept changing.
    """
    for attempt in range(STATUS_ATTEMPTS):
        if parent is None or attempt:
            parent = await kube.get(API, plural, namespace, name)
        if parent is None or parent.get("metadata", {}).get("uid") != uid:
            return None
        fields = await status_of(parent)
        if fields is None:
            return None
        version = parent["metadata"]["resourceVersion"]
        try:
            await kube.merge_patch_status(API, plural, namespace, name, fields, resource_version=version)
        except NotFound:
            return None
        except Conflict:
            continue
        return parent, fields
    raise Conflict(409, f"the status of {plural} {namespace}/{name} kept changing")


async def write_reconciled_status(
    kube: KubeClient, body: kopf.Body, plural: str, *, generation: int, expected_hash: str, applied: Mapping[str, Any]
) -> None:
    """The status after a reconcile applied the children (`applied`: the Deployment as the apply returned it).

    Written by `write_status`, not through kopf's patch (which kopf applies unconditionally after the handler):
    a Deployment event handled meanwhile must not be overwritten. After a conflict the Deployment is read again.
    """
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    noun = "model" if plural == INFERENCE_MODELS else "capture"
    deployment = applied

    async def status_of(parent: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal deployment
        if parent is not body:  # read again after a conflict: the Deployment may have moved on as well
            fresh = await kube.get("apps/v1", "deployments", namespace, applied["metadata"]["name"])
            deployment = fresh or deployment
        previous = parent.get("status") or {}
        return st.reconciled_status(
            generation=generation, expected_hash=expected_hash, deployment=deployment, previous=previous, noun=noun
        )

    try:
        await write_status(kube, plural, namespace, name, body["metadata"]["uid"], status_of, parent=body)
    except (ApiException, aiohttp.ClientError) as e:  # Conflict included
        raise transient(e, "writing the status") from e
