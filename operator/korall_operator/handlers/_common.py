"""What every handler module shares: resource names, the per-operator state in kopf's memo, error mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import kopf
from korall_contract import API_GROUP, API_VERSION
from kubernetes_asyncio.client.exceptions import ApiException

from korall_operator.k8s import KubeClient
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


def rejected(exc: ApiException, what: str) -> SpecError | None:
    """A 4xx from the API server on a child object: the spec produced something the cluster refuses.

    That is permanent until the spec changes (report it); anything else (5xx, 429, network) is transient.
    """
    if exc.status in (400, 403, 422):
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
