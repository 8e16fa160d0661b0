"""CaptureProfile lifecycle: audio profiles get their own Deployment; every profile pokes its InferenceModels.

A video profile is an input of the InferenceModels that reference it. When a profile appears, changes or goes
away, its models must be reconciled again (a model waiting for a missing profile recovers; a camera change
rolls the vision pods out). kopf re-runs a handler only on a change of the object it serves, so the profile
handlers *poke* each referencing model: they patch the `korall.io/capture-profile-seen` annotation with the
profile's uid and generation (`absent` when deleted). That is a real change of the model, its update handler
runs, no polling, no restart. The models are found through a kopf index (in memory, kept current by the watch).

Deletion is seen as a raw watch event, not with a delete handler, so kopf puts no finalizer on profiles; the
audio children go with their profile through their ownerReferences. A poke that fails (or an operator that was
down) loses nothing: each model records the profile it saw (`status.captureProfile`), and the resync loop
reconciles every model whose profile differs from it (follow.drift).

`status.usedBy` lists the InferenceModels that reference the profile (from the index; written here, by the
models' handlers when they change, and by the resync loop).
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import kopf

from korall_operator import status as st
from korall_operator.handlers._common import (
    API,
    CAPTURE_PROFILE_SEEN,
    CAPTURE_PROFILES,
    INFERENCE_MODELS,
    NamespaceGoing,
    State,
    apply_children,
    deleted,
    report_spec_failure,
    state,
    transient,
)
from korall_operator.handlers.follow import write_reconciled_status
from korall_operator.handlers.indexes import Indexes
from korall_operator.k8s import ApiError, NotFound
from korall_operator.manifests import build_audio_deployment, build_audio_service, child_name, pod_template_hash
from korall_operator.specs import SpecError, parse_capture_profile

GROUP, VERSION = API.split("/")


async def _poke_models(memo: Any, index: kopf.Index[Any, Any], namespace: str, name: str, seen: str) -> None:
    korall = state(memo)
    for model in sorted(set(index.get((namespace, name), []))):
        patch = {"metadata": {"annotations": {CAPTURE_PROFILE_SEEN: seen}}}
        with contextlib.suppress(NotFound):  # deleted meanwhile: nothing to reconcile
            await korall.kube.merge_patch(API, INFERENCE_MODELS, namespace, model, patch)


async def _remove_audio_children(korall: State, body: kopf.Body, name: str, namespace: str) -> None:
    """A profile that is no longer audio: its audio Deployment and Service go (only if this profile owns them)."""
    uid = str(body.get("metadata", {}).get("uid", ""))
    child = child_name(name, "audio")
    removed = [
        await korall.kube.delete_owned("apps/v1", "deployments", namespace, child, uid),
        await korall.kube.delete_owned("v1", "services", namespace, child, uid),
    ]
    if any(removed):
        await korall.events.record(body, "Normal", "AudioRemoved", f"no longer an audio profile: {child} deleted")


@kopf.on.create(GROUP, VERSION, CAPTURE_PROFILES)
@kopf.on.update(GROUP, VERSION, CAPTURE_PROFILES)
@kopf.on.resume(GROUP, VERSION, CAPTURE_PROFILES)
async def reconcile_capture_profile(
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
    **kwargs: Any,
) -> None:
    assert namespace is not None  # the CRD is namespaced
    korall = state(memo)
    indexes = Indexes.of(kwargs)
    generation = int(meta.get("generation", 1))
    previous = dict(status)
    used_by = {"usedBy": indexes.used_by(namespace, name)}
    try:
        if reason != "resume":  # on resume the models' own resume handlers already reconcile them
            seen = f"{meta.get('uid')}/{generation}"
            await _poke_models(memo, kwargs["inference_models_by_capture_profile"], namespace, name, seen)
        profile = parse_capture_profile(spec)
        if profile.type != "audio":
            await _remove_audio_children(korall, body, name, namespace)
            message = "a video profile runs nothing itself: it feeds the InferenceModels that reference it"
            patch.status.update(st.no_workload_status(generation=generation, previous=previous, message=message))
            patch.status.update(used_by)
            return
        deployment = build_audio_deployment(name, namespace, profile, korall.settings, owner=body)
        service = build_audio_service(name, namespace, korall.settings, owner=body)
        applied = await apply_children(korall.kube, "audio Deployment or Service", service, deployment)
    except NamespaceGoing:
        logger.info(f"namespace {namespace} is being deleted; nothing to reconcile")
        return
    except (ApiError, aiohttp.ClientError) as e:  # the API server is unreachable or failing
        raise transient(e, "talking to the API server") from e
    except SpecError as e:
        await report_spec_failure(
            korall, body, patch, e, generation=generation, previous=previous, logger=logger, extra=used_by
        )
        return

    expected = pod_template_hash(deployment) or ""
    await write_reconciled_status(
        korall,
        indexes,
        body,
        "CaptureProfile",
        generation=generation,
        expected_hash=expected,
        applied=applied,
        extra=used_by,
    )
    if reason == "create" or not previous:
        child = deployment["metadata"]["name"]
        await korall.events.record(body, "Normal", "Created", f"audio Deployment {child} applied")
    elif previous.get("specHash") != expected:
        await korall.events.record(body, "Normal", "RollingOut", f"audio pod template changed to {expected}")


@kopf.on.event(GROUP, VERSION, CAPTURE_PROFILES, when=deleted)
async def forget_capture_profile(
    type: str,
    name: str,
    namespace: str | None,
    memo: Any,
    **kwargs: Any,
) -> None:
    """The profile is gone: its models must report CaptureProfileNotFound (children cascade by themselves).

    A raw watch-event handler rather than `on.delete`: a delete handler would need a finalizer on every profile.
    """
    if namespace is not None:
        state(memo).writers.forget(("CaptureProfile", namespace, name))
        await _poke_models(memo, kwargs["inference_models_by_capture_profile"], namespace, name, "absent")
