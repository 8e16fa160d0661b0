"""InferenceModel lifecycle: create, update and resume all converge on one idempotent reconcile.

Reconcile = parse the spec, resolve its CaptureProfile, run the catalog's gate (promotion.py: which model the
Deployment runs; a validation Job for a new one), build the vision Deployment and Service (pure builders in
manifests.py), server-side apply them with an ownerReference to the InferenceModel, and write the status.

Error policy (no exception storms, no restart needed):
- a spec the operator cannot serve (invalid field, model not in the image, TPU without a TPU resource, missing
  or wrong CaptureProfile, a child the API server refuses) -> Degraded condition + Warning Event, and the handler
  *returns*: kopf marks it handled and waits for the next change. A fixed spec is a change; a CaptureProfile
  that appears pokes the models that wait for it (see capture_profiles.py), which is also a change; and should
  that poke be lost, the resync loop sees the profile differ from `status.captureProfile` (follow.drift);
- a transient failure (API server unavailable, 5xx) -> `kopf.TemporaryError`, retried by kopf after a delay;
- a namespace being deleted -> nothing: the model goes with it.

No delete handler and so no finalizer: the children carry ownerReferences, so Kubernetes' garbage collector
deletes them with the InferenceModel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from korall_operator import status as st
from korall_operator.catalog import ModelRef
from korall_operator.handlers._common import (
    API,
    CAPTURE_PROFILES,
    INFERENCE_MODELS,
    NamespaceGoing,
    State,
    apply_children,
    deleted,
    failure_of,
    report_spec_failure,
    state,
    transient,
    warn_spec_failure,
)
from korall_operator.handlers.follow import refresh_status, write_reconciled_status
from korall_operator.handlers.indexes import Indexes, profile_ref
from korall_operator.handlers.model_links import LinkUnavailable, ensure_link, link_lock
from korall_operator.handlers.promotion import Gated, gate, write_gated, write_held
from korall_operator.k8s import ApiError
from korall_operator.manifests import build_vision_deployment, build_vision_service, pod_template_hash
from korall_operator.spec_checks import check_vision_spec
from korall_operator.specs import (
    CaptureProfileSpec,
    SpecError,
    parse_capture_profile,
    parse_inference_model,
)

GROUP, VERSION = API.split("/")


def _going(body: dict[str, Any] | None) -> bool:
    """A CaptureProfile being deleted (held by someone's finalizer) is gone for its models, as follow.drift sees it."""
    return bool(((body or {}).get("metadata") or {}).get("deletionTimestamp"))


def _capture_profile(body: dict[str, Any] | None, namespace: str, name: str) -> CaptureProfileSpec:
    if body is None:
        raise SpecError(
            "CaptureProfileNotFound",
            f"captureProfileRef {name!r}: no CaptureProfile of that name in namespace {namespace!r}; "
            "create it (this model then recovers by itself) or remove spec.captureProfileRef",
        )
    if _going(body):
        finalizers = ", ".join(body["metadata"].get("finalizers") or []) or "none"
        raise SpecError(
            "CaptureProfileNotFound",
            f"captureProfileRef {name!r}: the CaptureProfile is being deleted (it waits for its finalizers: "
            f"{finalizers}); point spec.captureProfileRef at another profile, or remove it",
        )
    try:
        return parse_capture_profile(body.get("spec") or {})
    except SpecError as e:
        raise SpecError("CaptureProfileInvalid", f"CaptureProfile {name!r} is invalid: {e.message}") from e


def _seen(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """status.captureProfile: the CaptureProfile this reconcile used (the resync loop compares it with the
    profile's current uid and generation: a change whose poke was lost still rolls out)."""
    if body is None or _going(body):
        return None
    meta = body.get("metadata") or {}
    return {"name": meta.get("name"), "uid": meta.get("uid"), "generation": int(meta.get("generation") or 1)}


@kopf.on.resume(GROUP, VERSION, INFERENCE_MODELS)
@kopf.on.create(GROUP, VERSION, INFERENCE_MODELS)
@kopf.on.update(GROUP, VERSION, INFERENCE_MODELS)
async def reconcile_inference_model(name: str, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    """The reconcile, while no renewal of the model's s3 link runs (model_links.link_lock)."""
    assert namespace is not None  # the CRD is namespaced
    async with link_lock(state(memo), namespace, name):
        await _reconcile(name=name, namespace=namespace, memo=memo, **kwargs)


async def _reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str,
    patch: kopf.Patch,
    memo: Any,
    reason: str,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    korall = state(memo)
    indexes = Indexes.of(kwargs)
    generation = int(meta.get("generation", 1))
    previous = dict(status)
    ref = profile_ref(spec)
    seen: dict[str, Any] = {"captureProfile": None}
    admitted: Gated | None = None  # once the gate has admitted a model, a failure is of that model's rollout
    try:
        # The profile is read first, whatever the outcome: the status records which one this reconcile saw.
        profile_body = await korall.kube.get(API, CAPTURE_PROFILES, namespace, ref) if ref else None
        seen["captureProfile"] = _seen(profile_body)
        model = parse_inference_model(spec)
        capture = _capture_profile(profile_body, namespace, ref) if ref else None
        check_vision_spec(model, capture, korall.settings)  # the spec's model, whether or not it is admitted yet
        gated = await gate(korall, body, model, indexes, generation)
        if gated.applied is None:  # no model admitted yet: nothing to apply, the status says what it waits for
            await write_held(korall, body, gated, generation, seen)
            await _refresh_used_by(korall, indexes, namespace, ref, kwargs, logger)
            return
        held_back, model, admitted = gated.applied is not model, gated.applied, gated
        try:
            deployment = build_vision_deployment(name, namespace, model, capture, korall.settings, owner=body)
        except SpecError as e:
            if held_back and e.reason == "NodeSelectorConflict":
                raise _held_back_conflict(e, gated) from e
            raise
        service = build_vision_service(name, namespace, korall.settings, owner=body)
        expected = pod_template_hash(deployment) or ""
        # An s3 model's link Secret exists before the pod that mounts it (model_links.py).
        seen.update(await ensure_link(korall, body, model, check=True, reuse=True))
        applied = await apply_children(korall.kube, "vision Deployment or Service", service, deployment)
    except NamespaceGoing:
        logger.info(f"namespace {namespace} is being deleted; nothing to reconcile")
        return
    except (ApiError, aiohttp.ClientError) as e:  # the API server is unreachable or failing
        raise transient(e, "talking to the API server") from e
    except LinkUnavailable as e:  # reported, and retried by kopf (a Secret created or fixed later, a rate limit)
        # Warned once, not on every retry (30 s): the Degraded condition says it meanwhile.
        warn = not _reported(previous, e.failure)
        await _report_failure(korall, body, patch, e.failure, admitted, generation, previous, seen, logger, warn=warn)
        message = f"{e.failure.reason}: retrying in {e.retry_after_s:.0f} s"
        raise kopf.TemporaryError(message, delay=e.retry_after_s) from e
    except SpecError as e:
        # The same failure of the same spec, found again (the resync loop asks a production model whose admitted
        # model fails to apply every round): the Degraded condition says it already; no Warning each time.
        warn = not (_reported(previous, e) and previous.get("observedGeneration") == generation)
        await _report_failure(korall, body, patch, e, admitted, generation, previous, seen, logger, warn=warn)
        await _refresh_used_by(korall, indexes, namespace, ref, kwargs, logger)
        return

    await write_reconciled_status(
        korall,
        indexes,
        body,
        "InferenceModel",
        generation=generation,
        expected_hash=expected,
        applied=applied,
        extra=lambda parent: {**seen, **gated.status_fields(parent)},
        promotion=gated.decision.promotion,
    )
    await gated.announce(korall, body)
    await _announce(korall, body, reason, previous, expected, model.model.display, deployment["metadata"]["name"])
    await _refresh_used_by(korall, indexes, namespace, ref, kwargs, logger)


async def _report_failure(
    korall: State,
    body: kopf.Body,
    patch: kopf.Patch,
    exc: SpecError,
    admitted: Gated | None,
    generation: int,
    previous: dict[str, Any],
    seen: dict[str, Any],
    logger: kopf.Logger,
    *,
    warn: bool = True,
) -> None:
    """A spec failure (`warn`: with a Warning Event). Found before the gate ran (`lastFailure.during: spec`): only a
    change of the spec helps.

    Found while applying the model the gate admitted (`rollout`): when that is the model that served already, the
    failure is written with the gate's decision, so that what the catalog decided and recorded in this reconcile
    stands (a validation recorded, a model now waiting for approval) and it can move on, admitting another model,
    which may clear the failure, instead of being asked again every round of the resync loop. A decision to serve
    another model is not written while that model failed to apply: the catalog would say it serves."""
    serving = ModelRef.from_status((previous.get("catalog") or {}).get("serving"))
    applied = admitted.decision.applied if admitted is not None else None
    if admitted is None or applied is None or serving is None or applied.key != serving.key:
        await report_spec_failure(
            korall, body, patch, exc, generation=generation, previous=previous, logger=logger, extra=seen,
            during="spec" if admitted is None else "rollout", warn=warn,
        )  # fmt: skip
        return

    def failed(parent: Mapping[str, Any]) -> dict[str, Any]:
        return st.failed_status(
            generation=generation,
            failure=failure_of(exc),
            previous=parent,
            during="rollout",
            promotion=admitted.decision.promotion,
        )

    try:
        await write_gated(korall, body, admitted, failed, seen)
    except (ApiError, aiohttp.ClientError) as e:
        raise transient(e, "writing the status") from e
    if warn:
        await warn_spec_failure(korall, body, exc, logger)


def _held_back_conflict(e: SpecError, gated: Gated) -> SpecError:
    """A NodeSelectorConflict of the Deployment of a model that serves while the spec's own waits: the spec passed
    check_vision_spec, so the conflict is between the admitted model's gated fields (its tpuInterface, held back with
    it) and the spec's nodeSelector (not gated: it applies at once). Said so, instead of only asking for the
    tpuInterface the spec already sets; the old Deployment serves on unchanged meanwhile."""
    serving, cat = gated.decision.applied, gated.decision.catalog
    assert serving is not None  # held back: a model serves
    return SpecError(
        e.reason,
        f"{e.message}. The spec itself agrees: model {serving.short} serves with the accelerator and tpuInterface "
        f"it was admitted with until this spec's model {cat['shortSha']} is admitted "
        f"({gated.decision.promotion.reason}), while the nodeSelector applies at once; this clears once it is "
        "admitted (or set the nodeSelector back until then)",
    )


def _reported(previous: Mapping[str, Any], failure: SpecError) -> bool:
    """Whether the status already says this failure (Degraded, same reason and message)."""
    degraded = st.condition(previous, st.DEGRADED) or {}
    return degraded.get("status") == "True" and (degraded.get("reason"), degraded.get("message")) == (
        failure.reason,
        failure.message,
    )


async def _refresh_used_by(
    korall: State, indexes: Indexes, namespace: str, ref: str | None, kwargs: dict[str, Any], logger: kopf.Logger
) -> None:
    """status.usedBy of the CaptureProfiles this model references now, and referenced before this change."""
    old = profile_ref(((kwargs.get("old") or {}).get("spec")) or {})
    for profile in {p for p in (ref, old) if p}:
        try:
            await refresh_status(korall, indexes, "CaptureProfile", namespace, profile)
        except (ApiError, aiohttp.ClientError) as e:  # the resync loop makes it good
            logger.debug(f"usedBy of CaptureProfile {profile} not updated: {e}")


@kopf.on.event(GROUP, VERSION, INFERENCE_MODELS, when=deleted)
async def forget_inference_model(
    type: str, name: str, spec: kopf.Spec, namespace: str | None, memo: Any, logger: kopf.Logger, **kwargs: Any
) -> None:
    """A deleted model no longer uses its CaptureProfile (status.usedBy)."""
    if namespace is not None:
        korall = state(memo)
        korall.writers.forget(("InferenceModel", namespace, name))
        await _refresh_used_by(korall, Indexes.of(kwargs), namespace, profile_ref(spec), {}, logger)


async def _announce(
    korall: State, body: kopf.Body, reason: str, previous: dict[str, Any], expected: str, model: str, child: str
) -> None:
    """Normal Events for what a human wants in `kubectl describe`: created, rollout started, recovered."""
    old_hash = previous.get("specHash")
    if reason == "create" or not previous:
        await korall.events.record(body, "Normal", "Created", f"Deployment {child} applied, serving {model}")
    elif old_hash != expected:
        if st.spec_failure(previous) is not None:
            await korall.events.record(body, "Normal", "Recovered", f"the spec is valid again; rolling out {model}")
        await korall.events.record(
            body,
            "Normal",
            "RollingOut",
            f"pod template of {child} changed ({old_hash or 'none'} -> {expected}); rolling out {model}",
        )
