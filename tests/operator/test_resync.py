"""Level-triggered: an API call that fails while the operator handles a watch event loses nothing for good.

Each test makes one kind of call of the running operator fail (the operator's KubeClient is patched in this
process, where KopfRunner runs it: a failing API server cannot be produced on demand otherwise), lets the event
pass, then checks that the resync loop (every 2 s in these tests) puts the outcome right without any further
event. Run on the emulator and on the real API server, except where a test must write a Deployment's status.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster_helpers import API, Cluster, ClusterClient, cond, emulator_only, eventually
from korall_operator.handlers._common import CAPTURE_PROFILE_SEEN, RECONCILE_REQUESTED
from korall_operator.k8s import ApiError, KubeClient
from korall_operator.manifests import child_name
from test_reconcile import CPU_MODEL, inference_model, observed, video_profile

pytestmark = pytest.mark.usefixtures("operator")


@contextlib.contextmanager
def failing(method: str, when: Callable[..., bool], times: int = 1_000_000) -> Iterator[list[str]]:
    """The operator's `KubeClient.<method>` answers 503 for calls matching `when`, at most `times` times."""
    original = getattr(KubeClient, method)
    failed: list[str] = []

    async def flaky(self: KubeClient, *args: Any, **kwargs: Any) -> Any:
        if len(failed) < times and when(*args, **kwargs):
            failed.append(repr(args)[:120])
            raise ApiError(503, "Service Unavailable (injected by the test)")
        return await original(self, *args, **kwargs)

    setattr(KubeClient, method, flaky)
    try:
        yield failed
    finally:
        setattr(KubeClient, method, original)


def annotating(key: str) -> Callable[..., bool]:
    def when(*args: Any, **_: Any) -> bool:
        patch = args[-1] if args else {}
        return key in ((patch.get("metadata") or {}).get("annotations") or {})

    return when


async def test_a_lost_capture_profile_deletion_still_reaches_its_models(cluster: Cluster, kube: ClusterClient) -> None:
    ns, model, camera = cluster.namespace, f"lost-{secrets.token_hex(2)}", f"cam-{secrets.token_hex(2)}"
    await kube.create(API, "captureprofiles", ns, video_profile(camera))
    await kube.create(API, "inferencemodels", ns, inference_model(model, captureProfileRef={"name": camera}))
    im = await eventually(lambda: observed(kube, ns, model))
    assert im["status"]["captureProfile"]["name"] == camera

    with failing("merge_patch", annotating(CAPTURE_PROFILE_SEEN)) as failed:  # every poke of the models
        await kube.delete(API, "captureprofiles", ns, camera)

        async def reports_it_missing() -> None:
            got = await kube.get(API, "inferencemodels", ns, model)
            assert got is not None and cond(got, "Degraded")["reason"] == "CaptureProfileNotFound", got.get("status")

        await eventually(reports_it_missing, timeout=30)
    assert failed, "the deletion's poke was not even tried: the test proves nothing"


async def test_a_capture_profile_held_in_deletion_is_gone_for_its_models_once(
    cluster: Cluster, kube: ClusterClient
) -> None:
    """A profile whose deletion waits for someone else's finalizer is gone for its models: they report it at once,
    and are not reconciled (and warned about) again every round of the resync loop while it waits."""
    import asyncio

    ns, model, camera = cluster.namespace, f"held-{secrets.token_hex(2)}", f"cam-{secrets.token_hex(2)}"
    held = video_profile(camera)
    held["metadata"]["finalizers"] = ["example.com/backup"]  # someone else's: it holds the deletion
    await kube.create(API, "captureprofiles", ns, held)
    await kube.create(API, "inferencemodels", ns, inference_model(model, captureProfileRef={"name": camera}))
    assert (await eventually(lambda: observed(kube, ns, model)))["status"]["captureProfile"]["name"] == camera
    await kube.delete(API, "captureprofiles", ns, camera)
    assert ((await kube.get(API, "captureprofiles", ns, camera)) or {})["metadata"]["deletionTimestamp"]

    async def reports_it_gone() -> dict[str, Any]:
        got = await kube.get(API, "inferencemodels", ns, model)
        assert got is not None and cond(got, "Degraded")["reason"] == "CaptureProfileNotFound", got.get("status")
        assert "is being deleted" in cond(got, "Degraded")["message"]
        return got

    await eventually(reports_it_gone, timeout=30)
    await asyncio.sleep(3)  # a poke the loop sent before that write landed has been handled
    before = await reports_it_gone()
    await asyncio.sleep(8)  # four rounds of the resync loop
    after = await reports_it_gone()
    stamp = RECONCILE_REQUESTED
    assert (after["metadata"].get("annotations") or {}).get(stamp) == (before["metadata"].get("annotations") or {}).get(
        stamp
    ), "reconciled again while the profile waits for its finalizer"
    assert after["status"].get("captureProfile") is None  # gone from the status, as a profile that is gone
    await kube.merge_patch(API, "captureprofiles", ns, camera, {"metadata": {"finalizers": None}})


@pytest.mark.parametrize(("api", "plural"), [("apps/v1", "deployments"), ("v1", "services")])
async def test_a_lost_heal_of_a_deleted_child_is_retried(
    cluster: Cluster, kube: ClusterClient, api: str, plural: str
) -> None:
    ns, name = cluster.namespace, f"heal-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", ns, inference_model(name))
    await eventually(lambda: observed(kube, ns, name))
    child = await eventually(lambda: _child(kube, ns, name, api, plural))

    with failing("merge_patch", annotating(RECONCILE_REQUESTED), times=1) as failed:
        await kube.delete(api, plural, ns, child_name(name, "vision"))

        async def applied_again() -> None:
            again = await _child(kube, ns, name, api, plural)
            assert again["metadata"]["uid"] != child["metadata"]["uid"]

        await eventually(applied_again, timeout=30)
    assert failed, "the heal was not even tried: the test proves nothing"


async def test_a_lost_status_write_is_made_good_without_another_event(cluster: Cluster, kube: ClusterClient) -> None:
    emulator_only(cluster, "the test writes the Deployment status that a real Deployment controller owns")
    ns, name = cluster.namespace, f"write-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", ns, {**inference_model(name), "spec": {"model": {"file": CPU_MODEL}}})
    await eventually(lambda: observed(kube, ns, name))
    deployment = await eventually(lambda: _deployment(kube, ns, name))
    meta = deployment["metadata"]
    rolled_out = {"observedGeneration": meta["generation"], "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}

    def for_this_model(api: str, plural: str, namespace: str, obj: str, *_: Any, **__: Any) -> bool:
        return obj == name

    with failing("merge_patch_status", for_this_model, times=8) as failed:  # every attempt of the follow-up
        await kube.merge_patch_status("apps/v1", "deployments", ns, meta["name"], rolled_out)

        async def ready() -> None:
            got = await kube.get(API, "inferencemodels", ns, name)
            assert got is not None and cond(got, "Ready")["status"] == "True", got.get("status")

        await eventually(ready, timeout=30)
    assert failed, "the follow-up did not even try to write: the test proves nothing"


async def _deployment(kube: ClusterClient, ns: str, name: str) -> dict[str, Any]:
    return await _child(kube, ns, name, "apps/v1", "deployments")


async def _child(kube: ClusterClient, ns: str, name: str, api: str, plural: str) -> dict[str, Any]:
    got = await kube.get(api, plural, ns, child_name(name, "vision"))
    assert got is not None
    return got
