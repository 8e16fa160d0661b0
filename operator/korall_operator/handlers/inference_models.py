"""InferenceModel lifecycle: create, update and resume all converge on one idempotent reconcile.

Reconcile = parse the spec, resolve its CaptureProfile, build the vision Deployment and Service (pure builders
in manifests.py), server-side apply them with an ownerReference to the InferenceModel, and write the status.

Error policy (no exception storms, no restart needed):
- a spec the operator cannot serve (invalid field, model not in the image, TPU without a TPU resource, missing
  or wrong CaptureProfile, a child the API server refuses) -> Degraded condition + Warning Event, and the handler
  *returns*: kopf marks it handled and waits for the next change. A fixed spec is a change; a CaptureProfile
  that appears pokes the models that wait for it (see capture_profiles.py), which is also a change.
- a transient failure (API server unavailable, 5xx) -> `kopf.TemporaryError`, retried by kopf after a delay.

No delete handler and so no finalizer: the children carry ownerReferences, so Kubernetes' garbage collector
deletes them with the InferenceModel.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from korall_operator import status as st
from korall_operator.handlers._common import (
    API,
    CAPTURE_PROFILES,
    INFERENCE_MODELS,
    State,
    apply_children,
    report_spec_failure,
    state,
    transient,
    write_reconciled_status,
)
from korall_operator.manifests import build_vision_deployment, build_vision_service, pod_template_hash
from korall_operator.specs import CaptureProfileSpec, SpecError, parse_capture_profile, parse_inference_model

GROUP, VERSION = API.split("/")


@kopf.index(GROUP, VERSION, INFERENCE_MODELS)
def inference_models_by_capture_profile(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str] | None:
    """(namespace, CaptureProfile name) -> the InferenceModels that reference it; read by the profile handlers."""
    ref = spec.get("captureProfileRef") or {}
    profile = ref.get("name") if isinstance(ref, dict) else None
    return {(namespace or "", profile): name} if isinstance(profile, str) and profile else None


async def _capture_profile(korall: State, namespace: str, name: str) -> CaptureProfileSpec:
    body = await korall.kube.get(API, CAPTURE_PROFILES, namespace, name)
    if body is None:
        raise SpecError(
            "CaptureProfileNotFound",
            f"captureProfileRef {name!r}: no CaptureProfile of that name in namespace {namespace!r}; "
            "create it (this model then recovers by itself) or remove spec.captureProfileRef",
        )
    try:
        return parse_capture_profile(body.get("spec") or {})
    except SpecError as e:
        raise SpecError("CaptureProfileInvalid", f"CaptureProfile {name!r} is invalid: {e.message}") from e


@kopf.on.resume(GROUP, VERSION, INFERENCE_MODELS)
@kopf.on.create(GROUP, VERSION, INFERENCE_MODELS)
@kopf.on.update(GROUP, VERSION, INFERENCE_MODELS)
async def reconcile_inference_model(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    memo: Any,
    reason: str,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # the CRD is namespaced
    korall = state(memo)
    generation = int(meta.get("generation", 1))
    previous = dict(status)
    try:
        model = parse_inference_model(spec)
        capture = None
        if model.capture_profile_ref is not None:
            capture = await _capture_profile(korall, namespace, model.capture_profile_ref.name)
        deployment = build_vision_deployment(name, namespace, model, capture, korall.settings, owner=body)
        service = build_vision_service(name, namespace, korall.settings, owner=body)
        expected = pod_template_hash(deployment) or ""
        applied = await apply_children(korall.kube, "vision Deployment or Service", service, deployment)
    except (ApiException, aiohttp.ClientError) as e:  # the API server is unreachable or failing
        raise transient(e, "talking to the API server") from e
    except SpecError as e:
        report_spec_failure(body, patch, e, generation=generation, previous=previous, logger=logger)
        return

    await write_reconciled_status(
        korall.kube, body, INFERENCE_MODELS, generation=generation, expected_hash=expected, applied=applied
    )
    _announce(body, reason, previous, expected, model.model.display, deployment["metadata"]["name"])


def _announce(body: kopf.Body, reason: str, previous: dict[str, Any], expected: str, model: str, child: str) -> None:
    """Normal Events for what a human wants in `kubectl describe`: created, rollout started, recovered."""
    old_hash = previous.get("specHash")
    if reason == "create" or not previous:
        kopf.event(body, type="Normal", reason="Created", message=f"Deployment {child} applied, serving {model}")
    elif old_hash != expected:
        if st.spec_failure(previous) is not None:
            kopf.event(body, type="Normal", reason="Recovered", message=f"the spec is valid again; rolling out {model}")
        kopf.event(
            body,
            type="Normal",
            reason="RollingOut",
            message=f"pod template of {child} changed ({old_hash or 'none'} -> {expected}); rolling out {model}",
        )
