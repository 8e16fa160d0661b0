"""The real handlers called directly (no kopf runner), for what a running operator hits only by chance.

- Interleaving: kopf runs the writers of a parent's status (reconcile handler, child watchers) concurrently, so
  a Deployment event can be handled between the reconcile handler's apply and its status write. The test forces
  that, playing the Deployment controller by writing the Deployment's status right after the handler applied it
  (emulator only: a real controller owns that status). kopf's part is played too: its indexes are filled by
  hand (kopf fills them from its watches, which do not run here), and after the handler returns its `patch` is
  applied the way kopf applies it (an unconditional merge patch of the status).
- Self-healing: a parent that wants no child is not reconciled again when its child is missing.
- API failures: the operator's client is made to fail its calls (503, 409: a failing API server cannot be
  produced on demand otherwise); the handler must turn them into kopf.TemporaryError, retried after a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from cluster_helpers import API, Cluster, ClusterClient, emulator_only
from kopf._core.engines import posting
from korall_operator import status as st
from korall_operator.handlers import deployment_changed, reconcile_capture_profile, reconcile_inference_model
from korall_operator.handlers._common import RECONCILE_REQUESTED, State
from korall_operator.handlers.follow import heal_or_refresh
from korall_operator.handlers.indexes import Indexes, ParentView
from korall_operator.k8s import ApiError
from korall_operator.manifests import child_name
from korall_operator.observed import child_key, slim_deployment
from korall_operator.settings import OperatorSettings

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
LOGGER = logging.getLogger("test_handlers_direct")


def index_kwargs(**stores: dict[Any, list[Any]]) -> dict[str, Any]:
    """kopf's indexes as handler keyword arguments, filled by the test (a mapping of key -> values is what a
    handler reads of a kopf.Index)."""
    names = (
        "deployments_by_parent",
        "services_by_parent",
        "pod_problems_by_parent",
        "inference_models",
        "capture_profiles",
        "inference_models_by_capture_profile",
    )
    return {name: stores.get(name, {}) for name in names}


@contextlib.contextmanager
def kopf_context() -> Iterator[None]:
    """What kopf.event() needs outside a running operator: settings and a queue (nobody posts these Events)."""
    tokens = [
        (posting.settings_var, posting.settings_var.set(kopf.OperatorSettings())),
        (posting.event_queue_var, posting.event_queue_var.set(asyncio.Queue())),
        (posting.event_queue_loop_var, posting.event_queue_loop_var.set(asyncio.get_running_loop())),
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _ControllerAfterApply(ClusterClient):
    """The operator's client; right after it applies a Deployment, the 'controller' marks it rolled out, kopf's
    index takes the new state and the child watcher handles that event, before the reconcile handler goes on with
    the (stale) applied object."""

    memo: Any = None
    indexes: dict[str, Any] | None = None

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        applied = await super().apply(manifest)
        if manifest["kind"] == "Deployment" and self.memo is not None:
            meta = applied["metadata"]
            replicas = applied["spec"]["replicas"]
            status = {
                "observedGeneration": meta["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
            }
            fresh = await self.merge_patch_status("apps/v1", "deployments", meta["namespace"], meta["name"], status)
            assert self.indexes is not None
            self.indexes["deployments_by_parent"][child_key(fresh)] = [slim_deployment(fresh)]
            await deployment_changed(body=kopf.Body(fresh), memo=self.memo, logger=LOGGER, **self.indexes)
        return applied


async def _reconcile(
    kube: ClusterClient, memo: Any, ns: str, name: str, reason: str, indexes: dict[str, Any] | None = None
) -> None:
    """Run the reconcile handler once, then apply its patch as kopf does."""
    raw = await kube.get(API, "inferencemodels", ns, name)
    assert raw is not None
    body, patch = kopf.Body(raw), kopf.Patch()
    if indexes is None:
        indexes = index_kwargs()
    view = ParentView("InferenceModel", ns, name, raw["metadata"]["uid"], raw["metadata"]["generation"], {})
    indexes["inference_models"][("InferenceModel", ns, name)] = [view]
    await reconcile_inference_model(
        body=body,
        spec=body.spec,
        meta=body.meta,
        status=body.status,
        name=name,
        namespace=ns,
        patch=patch,
        memo=memo,
        reason=reason,
        logger=LOGGER,
        **indexes,
    )
    if patch.get("status"):
        await kube.merge_patch_status(API, "inferencemodels", ns, name, patch["status"])


async def test_a_deployment_event_during_reconcile_is_not_overwritten(cluster: Cluster, kube: ClusterClient) -> None:
    emulator_only(cluster, "the test writes the Deployment status that a real Deployment controller owns")
    ns, name = cluster.namespace, "race"
    operator_kube = await _ControllerAfterApply.from_environment()
    memo = SimpleNamespace(korall=State(settings=OperatorSettings(), kube=operator_kube))
    indexes = operator_kube.indexes = index_kwargs()
    try:
        with kopf_context():
            body = {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name}}
            await kube.create(API, "inferencemodels", ns, {**body, "spec": {"model": {"file": CPU_MODEL}}})
            await _reconcile(kube, memo, ns, name, "create", indexes)

            # Scale to 2: the apply bumps the Deployment's generation, the controller catches up at once and the
            # follower reports Ready, all before the handler writes the status it computed from the applied object.
            await kube.merge_patch(API, "inferencemodels", ns, name, {"spec": {"replicas": 2}})
            operator_kube.memo = memo
            await _reconcile(kube, memo, ns, name, "update", indexes)

            deployment = await kube.get("apps/v1", "deployments", ns, child_name(name, "vision"))
            im = await kube.get(API, "inferencemodels", ns, name)
            assert deployment is not None and im is not None
            assert deployment["status"]["readyReplicas"] == 2
            ready = next(c for c in im["status"]["conditions"] if c["type"] == "Ready")
            assert (ready["status"], im["status"]["readyReplicas"]) == ("True", 2), im["status"]
            assert im["status"]["observedGeneration"] == im["metadata"]["generation"]
    finally:
        await operator_kube.close()


class _PokeFails(ClusterClient):
    """The operator's client, with an API server that fails every merge patch (the capture-profile poke)."""

    async def merge_patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ApiError(503, "Service Unavailable")


async def test_a_failing_poke_of_the_models_is_a_temporary_error(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, "cam-poke"
    profile = {"type": "video", "device": "/dev/video0", "video": {}}
    await kube.create(
        API,
        "captureprofiles",
        ns,
        {"apiVersion": API, "kind": "CaptureProfile", "metadata": {"name": name}, "spec": profile},
    )
    raw = await kube.get(API, "captureprofiles", ns, name)
    assert raw is not None
    body = kopf.Body(raw)
    operator_kube = await _PokeFails.from_environment()
    memo = SimpleNamespace(korall=State(settings=OperatorSettings(), kube=operator_kube))
    try:
        with kopf_context(), pytest.raises(kopf.TemporaryError, match="HTTP 503"):
            await reconcile_capture_profile(
                body=body,
                spec=body.spec,
                meta=body.meta,
                status=body.status,
                name=name,
                namespace=ns,
                patch=kopf.Patch(),
                memo=memo,
                reason="update",
                logger=LOGGER,
                **index_kwargs(inference_models_by_capture_profile={(ns, name): ["a-model"]}),
            )
    finally:
        await operator_kube.close()


@pytest.mark.parametrize(
    ("status", "reason"),
    [(409, "Conflict"), (403, "Forbidden")],  # 403: missing RBAC or a terminating namespace, not the spec's fault
)
async def test_a_conflict_or_forbidden_from_the_api_server_is_a_temporary_error(
    cluster: Cluster, kube: ClusterClient, status: int, reason: str
) -> None:
    """k8s.py raises its own Conflict for a 409, and a 403 is no spec error: both are retried after a delay."""
    ns, name = cluster.namespace, f"refused-{status}"
    body = {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name}}
    await kube.create(API, "inferencemodels", ns, {**body, "spec": {"model": {"file": CPU_MODEL}}})
    operator_kube = await ClusterClient.from_environment()

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ApiError(status, reason)

    operator_kube._call = refuse  # type: ignore[method-assign]
    memo = SimpleNamespace(korall=State(settings=OperatorSettings(), kube=operator_kube))
    try:
        with kopf_context(), pytest.raises(kopf.TemporaryError, match=f"HTTP {status}"):
            await _reconcile(kube, memo, ns, name, "update")
    finally:
        await operator_kube.close()


async def test_a_missing_child_the_parent_no_longer_wants_is_not_healed(cluster: Cluster, kube: ClusterClient) -> None:
    """A profile that stopped being audio had its audio Deployment deleted by the operator itself: its missing
    child must not get the profile reconciled once more (it would apply nothing)."""
    ns, name = cluster.namespace, "was-audio"
    spec = {"type": "video", "device": "/dev/video0", "video": {}}
    created = await kube.create(
        API,
        "captureprofiles",
        ns,
        {"apiVersion": API, "kind": "CaptureProfile", "metadata": {"name": name}, "spec": spec},
    )
    meta = created["metadata"]
    status = st.no_workload_status(generation=meta["generation"], previous=None, message="video")
    await kube.merge_patch_status(API, "captureprofiles", ns, name, status)
    view = ParentView("CaptureProfile", ns, name, meta["uid"], meta["generation"], status)
    indexes = Indexes.of(index_kwargs(capture_profiles={("CaptureProfile", ns, name): [view]}))
    operator_kube = await ClusterClient.from_environment()
    memo = SimpleNamespace(korall=State(settings=OperatorSettings(), kube=operator_kube))
    try:
        with kopf_context():
            await heal_or_refresh(memo.korall, indexes, "CaptureProfile", ns, name)
    finally:
        await operator_kube.close()
    profile = await kube.get(API, "captureprofiles", ns, name)
    assert profile is not None
    assert RECONCILE_REQUESTED not in (profile["metadata"].get("annotations") or {})
