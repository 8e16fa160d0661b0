"""The operator on a real control plane, with the chart's RBAC: what only real controllers, a real scheduler and
real admission show (the operator tests in tests/operator run here too, unchanged, as their `[real]` variants).

The fake nodes (fake_nodes.py) play the kubelet: pods bound to them become Running and Ready, or fail the way a
kubelet reports it when a test asks. `edge-solo` has exactly one `coral.ai/tpu`.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import SOLO_TPU_NODE, TPU_NODE, RealClusterWithChart
from cluster_helpers import API, ClusterClient, eventually, warned_once
from fake_nodes import CRASH_LOOP, IMAGE_PULL

pytestmark = pytest.mark.usefixtures("controllers", "operator")

ROOT = Path(__file__).resolve().parents[2]
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"


def model(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name}, "spec": {**spec}}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    raise AssertionError(f"no {type_} condition yet: {(obj or {}).get('status')}")


async def ready(kube: ClusterClient, ns: str, plural: str, name: str) -> dict[str, Any]:
    obj = await kube.get(API, plural, ns, name)
    assert obj is not None
    status = obj.get("status") or {}
    assert status.get("observedGeneration") == obj["metadata"]["generation"], status
    assert condition(obj, "Ready")["status"] == "True", status
    return obj


async def degraded(kube: ClusterClient, ns: str, name: str, reason: str) -> dict[str, Any]:
    obj = await kube.get(API, "inferencemodels", ns, name)
    cond = condition(obj, "Degraded")
    assert (cond["status"], cond["reason"]) == ("True", reason), cond
    return cond


async def pods_of(kube: ClusterClient, ns: str, name: str) -> list[dict[str, Any]]:
    """The serving pods of an InferenceModel (not its validation Jobs' pods, which share its instance label)."""
    return await kube.list("v1", "pods", ns, f"app.kubernetes.io/instance={name},app.kubernetes.io/name=korall-vision")


async def test_every_sample_becomes_ready_on_the_nodes_it_names(
    real_cluster: RealClusterWithChart, namespace: str, kube: ClusterClient
) -> None:
    for sample in sorted((ROOT / "samples").glob("*.yaml")):
        real_cluster.cluster.run("kubectl", "apply", "-n", namespace, "-f", str(sample))
    for plural in ("inferencemodels", "captureprofiles"):
        for obj in await kube.list(API, plural, namespace):
            await eventually(lambda p=plural, n=obj["metadata"]["name"]: ready(kube, namespace, p, n), timeout=30)
    for obj in await kube.list(API, "inferencemodels", namespace):
        (pod,) = await pods_of(kube, namespace, obj["metadata"]["name"])
        if obj["spec"].get("accelerator") == "edgetpu":  # the USB sample: the TPU node its camera profile names
            assert pod["spec"]["nodeName"] == TPU_NODE


async def test_a_tpu_model_lands_on_the_tpu_node_and_a_change_rolls_out_without_a_stuck_pod(
    real_cluster: RealClusterWithChart, namespace: str, kube: ClusterClient, garbage_collection: float
) -> None:
    name = f"solo-{secrets.token_hex(2)}"
    body = model(
        name, model={"file": TPU_MODEL}, accelerator="edgetpu", nodeSelector={"kubernetes.io/hostname": SOLO_TPU_NODE}
    )
    await kube.create(API, "inferencemodels", namespace, body)
    first = await eventually(lambda: ready(kube, namespace, "inferencemodels", name), timeout=30)
    (pod,) = await pods_of(kube, namespace, name)
    assert pod["spec"]["nodeName"] == SOLO_TPU_NODE

    started = time.monotonic()
    await kube.merge_patch(API, "inferencemodels", namespace, name, {"spec": {"scoreThreshold": 0.6}})

    async def rolled_out() -> dict[str, Any]:
        im = await ready(kube, namespace, "inferencemodels", name)
        assert im["status"]["specHash"] != first["status"]["specHash"]
        return im

    await eventually(rolled_out, timeout=30)
    elapsed = time.monotonic() - started
    (pod,) = await pods_of(kube, namespace, name)
    assert pod["spec"]["nodeName"] == SOLO_TPU_NODE
    events = await kube.list("v1", "events", namespace)
    stuck = [e for e in events if e.get("reason") == "FailedScheduling" and name in e["involvedObject"]["name"]]
    assert not stuck, "a surge pod could not be scheduled beside the old one: the rollout must be Recreate"
    assert elapsed < 15, f"the Recreate rollout took {elapsed:.1f} s"

    # A second model for the same single TPU cannot be scheduled: it says why, and runs once the TPU is free.
    other = f"{name}-b"
    await kube.create(API, "inferencemodels", namespace, {**body, "metadata": {"name": other}})
    cond = await eventually(lambda: degraded(kube, namespace, other, "Unschedulable"), timeout=30)
    assert "Insufficient coral.ai/tpu" in cond["message"], cond
    await kube.delete(API, "inferencemodels", namespace, name)
    await eventually(lambda: ready(kube, namespace, "inferencemodels", other), timeout=60)


@pytest.mark.parametrize("outcome", [CRASH_LOOP, IMAGE_PULL])
async def test_a_pod_that_cannot_run_is_reported_at_once_and_clears_when_it_runs(
    real_cluster: RealClusterWithChart, namespace: str, kube: ClusterClient, outcome: str
) -> None:
    name = f"sick-{secrets.token_hex(2)}"
    rule = real_cluster.cluster.nodes.fail(f"^{namespace}/{name}-", outcome, "panic: model file unreadable")
    try:
        started = time.monotonic()
        await kube.create(API, "inferencemodels", namespace, model(name, model={"file": CPU_MODEL}))
        cond = await eventually(lambda: degraded(kube, namespace, name, outcome), timeout=120)
        elapsed = time.monotonic() - started
        im = await kube.get(API, "inferencemodels", namespace, name)
        assert im is not None and condition(im, "Ready")["status"] == "False"
        assert im["status"]["lastFailure"]["reason"] == outcome
        if outcome == CRASH_LOOP:  # the last exit's message, and later the restarts as they add up
            assert "last exit 1 (Error): panic: model file unreadable" in cond["message"], cond

            async def restarting() -> None:
                assert "restarted 2 times" in (await degraded(kube, namespace, name, outcome))["message"]

            await eventually(restarting, timeout=30)
        else:
            assert "Back-off pulling image" in cond["message"], cond
        await eventually(lambda: warned_once(kube, namespace, name, outcome), timeout=15)
        assert elapsed < 30, f"reported after {elapsed:.1f} s (the issue allows 2 minutes; it should be seconds)"
    finally:
        real_cluster.cluster.nodes.clear(rule)
    await eventually(lambda: ready(kube, namespace, "inferencemodels", name), timeout=30)
    assert condition(await kube.get(API, "inferencemodels", namespace, name), "Degraded")["status"] == "False"
