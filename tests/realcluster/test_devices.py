"""Devices as schedulable resources (issue 16) on a real control plane: the chart's device plugin and TPU waker run
on every node, the USB sample's pod gets its TPU and camera as extended resources and runs unprivileged, and two
models on one camera give one running pod and a CameraInUse condition on the other, until the first goes.

The fake nodes (cluster.NODES) advertise what the plugin would: `edge-node-1` TPUs, /dev/video0 and the sound
devices; `edge-cam-1` one camera, /dev/video4, that no other test asks for. What the plugin's allocation then does
on a real node (the device nodes and their cgroup rules in the container) needs a kubelet and the hardware: the
real scheduler's accounting of the resources is what is tested here.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from cluster import CAMERA_DEVICE, CAMERA_NODE, NODES, RELEASE_NAMESPACE, TPU_NODE, RealClusterWithChart
from cluster_helpers import API, ClusterClient, eventually, warned_once

pytestmark = pytest.mark.usefixtures("operator")

ROOT = Path(__file__).resolve().parents[2]
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
UNPRIVILEGED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    raise AssertionError(f"no {type_} condition yet: {(obj or {}).get('status')}")


async def ready(kube: ClusterClient, ns: str, name: str) -> dict[str, Any]:
    im = await kube.get(API, "inferencemodels", ns, name)
    assert im is not None and condition(im, "Ready")["status"] == "True", (im or {}).get("status")
    return im


async def pods_of(kube: ClusterClient, ns: str, name: str) -> list[dict[str, Any]]:
    """The serving pods of an InferenceModel (not its validation Jobs' pods, which share its instance label)."""
    return await kube.list("v1", "pods", ns, f"app.kubernetes.io/instance={name},app.kubernetes.io/name=korall-vision")


async def test_the_device_plugin_and_the_tpu_waker_run_on_every_node(kube: ClusterClient) -> None:
    for name in ("korall-device-plugin", "korall-tpu-wake"):

        async def on_every_node(app: str = name) -> None:
            pods = await kube.list("v1", "pods", RELEASE_NAMESPACE, f"app.kubernetes.io/name={app}")
            running = {p["spec"].get("nodeName") for p in pods if (p.get("status") or {}).get("phase") == "Running"}
            assert running == {n.name for n in NODES}, running

        await eventually(on_every_node, timeout=60)


async def test_the_usb_sample_gets_its_tpu_and_camera_granted_and_runs_unprivileged(
    real_cluster: RealClusterWithChart, namespace: str, kube: ClusterClient
) -> None:
    real_cluster.cluster.run("kubectl", "apply", "-n", namespace, "-f", str(ROOT / "samples" / "usb-coral-webcam.yaml"))
    await eventually(lambda: ready(kube, namespace, "front-door"), timeout=30)
    (pod,) = await pods_of(kube, namespace, "front-door")
    assert pod["spec"]["nodeName"] == TPU_NODE
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {
        "coral.ai/tpu": "1",
        "korall.io/video0": "1",
        "memory": "384Mi",
    }
    assert container["securityContext"] == UNPRIVILEGED
    assert not [v for v in pod["spec"]["volumes"] if v.get("hostPath", {}).get("path", "").startswith("/dev/")]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["supplementalGroups"] == [29, 44, 46]


async def test_two_models_on_one_camera_run_one_pod_and_say_who_holds_it(
    real_cluster: RealClusterWithChart, namespace: str, kube: ClusterClient, garbage_collection: float
) -> None:
    camera, first, second = (f"{n}-{secrets.token_hex(2)}" for n in ("door", "first", "second"))
    profile = {
        "apiVersion": API,
        "kind": "CaptureProfile",
        "metadata": {"name": camera},
        "spec": {
            "type": "video",
            "device": CAMERA_DEVICE,
            "nodeSelector": {"kubernetes.io/hostname": CAMERA_NODE},
            "video": {"width": 640, "height": 480},
        },
    }
    await kube.create(API, "captureprofiles", namespace, profile)

    def model(name: str) -> dict[str, Any]:
        spec = {"model": {"file": CPU_MODEL}, "captureProfileRef": {"name": camera}}
        return {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name}, "spec": spec}

    await kube.create(API, "inferencemodels", namespace, model(first))
    await eventually(lambda: ready(kube, namespace, first), timeout=30)
    await kube.create(API, "inferencemodels", namespace, model(second))

    async def camera_in_use() -> dict[str, Any]:
        im = await kube.get(API, "inferencemodels", namespace, second)
        degraded = condition(im, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "CameraInUse"), degraded
        return degraded

    degraded = await eventually(camera_in_use, timeout=30)
    assert f"is in use by InferenceModel '{first}'" in degraded["message"], degraded
    assert f"CaptureProfile '{camera}' (korall.io/video4)" in degraded["message"]
    assert condition(await kube.get(API, "inferencemodels", namespace, second), "Ready")["status"] == "False"

    # exactly one running pod: the scheduler itself refused the second, for lack of the camera
    running = [p for m in (first, second) for p in await pods_of(kube, namespace, m) if p["spec"].get("nodeName")]
    assert [p["metadata"]["labels"]["app.kubernetes.io/instance"] for p in running] == [first]
    (waiting,) = await pods_of(kube, namespace, second)
    scheduled = {c["type"]: c for c in waiting["status"]["conditions"]}["PodScheduled"]
    assert scheduled["reason"] == "Unschedulable" and "Insufficient korall.io/video4" in scheduled["message"]

    async def used_by_both() -> None:
        # usedBy follows the models (written after the second's reconcile, or by the resync loop): not at once
        used_by = (await kube.get(API, "captureprofiles", namespace, camera) or {}).get("status", {}).get("usedBy")
        assert used_by == sorted([first, second])

    await eventually(used_by_both, timeout=30)
    await eventually(lambda: warned_once(kube, namespace, second, "CameraInUse"), timeout=15)

    # the first goes, the camera is free: the second runs, with nothing done to it
    await kube.delete(API, "inferencemodels", namespace, first)
    await eventually(lambda: ready(kube, namespace, second), timeout=60)
    (pod,) = await pods_of(kube, namespace, second)
    assert pod["spec"]["nodeName"] == CAMERA_NODE
    assert condition(await kube.get(API, "inferencemodels", namespace, second), "Degraded")["status"] == "False"
