"""korall on a real (kind) cluster: CRDs with their CEL rules in a real API server, the operator from its image and
chart, a fake TPU node, and a real photo through the vision pod.

Mocked: only the Coral itself. The node advertises `coral.ai/tpu: 1` (its status patched, as a device plugin would);
the TPU pod must be scheduled there, and a second one must stay Pending. The photo
goes to a CPU model, since no Edge TPU exists on a CI runner.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kind_support import ROOT, KindCluster, why_no_kind

NO_KIND = why_no_kind()
pytestmark = [pytest.mark.kind, pytest.mark.skipif(NO_KIND is not None, reason=f"kind e2e suite skipped: {NO_KIND}")]

CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
NS = "default"


def _crd_cases() -> dict[str, tuple[str, dict[str, Any]]]:
    """The CEL cases of tests/operator/test_crds.py: each a spec that only a CEL rule forbids."""
    spec = importlib.util.spec_from_file_location("korall_test_crds", ROOT / "tests" / "operator" / "test_crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CEL_CASES)


def inference_model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "korall.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def apply(
    cluster: KindCluster, obj: dict[str, Any], *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    path = Path(cluster.kubeconfig).parent / f"{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    return cluster.kubectl("apply", "-f", str(path), *extra, check=check)


def get(cluster: KindCluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_samples_pass_the_api_server_validation(kind_cluster: KindCluster) -> None:
    for sample in sorted((ROOT / "samples").glob("*.yaml")):
        kind_cluster.kubectl("apply", "--dry-run=server", "-n", NS, "-f", str(sample))


@pytest.mark.parametrize("message", sorted(_crd_cases()))
def test_cel_rules_run_in_the_api_server(kind_cluster: KindCluster, message: str) -> None:
    kind, spec = _crd_cases()[message]
    obj = {"apiVersion": "korall.io/v1alpha1", "kind": kind, "metadata": {"name": "bad", "namespace": NS}, "spec": spec}
    out = apply(kind_cluster, obj, "--dry-run=server", check=False)
    assert out.returncode != 0
    assert message in out.stderr


def test_cpu_model_serves_a_real_photo(kind_cluster: KindCluster) -> None:
    """With the chart's default token Secret (issue 15): created as the README says, only the token's sha256 in it."""
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    kind_cluster.kubectl(
        "create", "secret", "generic", "korall-api-tokens", "-n", NS, f"--from-literal=tokens=e2e sha256:{digest}"
    )
    apply(kind_cluster, inference_model("e2e-cpu", model={"file": CPU_MODEL}, accelerator="cpu", scoreThreshold=0.3))
    kind_cluster.kubectl("rollout", "status", "deployment/e2e-cpu-vision", "-n", NS, "--timeout=300s", timeout=330)
    kind_cluster.kubectl("wait", "im/e2e-cpu", "-n", NS, "--for=condition=Ready", "--timeout=120s", timeout=150)
    listing = kind_cluster.kubectl("get", "im", "-n", NS).stdout
    assert "STAGE" in listing and "ACCELERATOR" in listing and "e2e-cpu" in listing

    port = free_port()
    forward = subprocess.Popen(
        [str(kind_cluster.bin / "kubectl"), "--kubeconfig", str(kind_cluster.kubeconfig), "port-forward", "-n", NS,
         "svc/e2e-cpu-vision", f"{port}:5052"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the port-forwarded vision service never became ready"
            time.sleep(1)
        import skimage

        photo = Path(skimage.__file__).parent / "data" / "chelsea.png"
        refused = httpx.post(f"{url}/infer", content=photo.read_bytes(), timeout=60)
        assert refused.status_code == 401, refused.text
        reply = httpx.post(
            f"{url}/infer",
            content=photo.read_bytes(),
            headers={"Content-Type": "image/png", "Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        labels = [d["label"] for d in reply.json()["detections"]]
        assert "cat" in labels
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_model_change_rolls_out_a_new_template(kind_cluster: KindCluster) -> None:
    before = get(kind_cluster, "deployment/e2e-cpu-vision", "-n", NS)["spec"]["template"]["metadata"]["annotations"]
    kind_cluster.kubectl("patch", "im/e2e-cpu", "-n", NS, "--type=merge", "-p", '{"spec": {"topK": 3}}')
    deadline = time.monotonic() + 60
    while True:
        after = get(kind_cluster, "deployment/e2e-cpu-vision", "-n", NS)["spec"]["template"]["metadata"]["annotations"]
        if after["korall.io/spec-hash"] != before["korall.io/spec-hash"]:
            break
        assert time.monotonic() < deadline, "the pod template never changed after a spec change"
        time.sleep(1)
    kind_cluster.kubectl("rollout", "status", "deployment/e2e-cpu-vision", "-n", NS, "--timeout=300s", timeout=330)


def test_tpu_pods_are_pinned_and_exclusive(kind_cluster: KindCluster) -> None:
    """One fake TPU on the node: the first edgetpu pod is scheduled there, the second stays Pending."""
    for name in ("e2e-tpu-a", "e2e-tpu-b"):
        apply(kind_cluster, inference_model(name, model={"file": TPU_MODEL}, accelerator="edgetpu", tpuInterface="usb"))
    deadline = time.monotonic() + 120
    while True:
        pods = get(
            kind_cluster,
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/name=korall-vision,app.kubernetes.io/instance in (e2e-tpu-a,e2e-tpu-b)",
        )["items"]
        scheduled = [p for p in pods if p["spec"].get("nodeName")]
        pending = [p for p in pods if not p["spec"].get("nodeName")]
        if len(scheduled) == 1 and len(pending) == 1:
            break
        assert time.monotonic() < deadline, (
            f"expected one scheduled and one pending TPU pod, got {len(scheduled)}/{len(pending)}"
        )
        time.sleep(2)
    assert scheduled[0]["spec"]["nodeName"] == kind_cluster.node
    assert scheduled[0]["spec"]["containers"][0]["resources"]["limits"]["coral.ai/tpu"] == "1"
    conditions = {c["type"]: c for c in pending[0]["status"].get("conditions", [])}
    assert "coral.ai/tpu" in conditions["PodScheduled"]["message"]


def test_deleting_the_model_deletes_its_children(kind_cluster: KindCluster) -> None:
    kind_cluster.kubectl("delete", "im/e2e-cpu", "-n", NS, "--wait=true", "--timeout=120s", timeout=150)
    deadline = time.monotonic() + 120
    while True:
        left = kind_cluster.kubectl(
            "get", "deployment/e2e-cpu-vision", "service/e2e-cpu-vision", "-n", NS, "--ignore-not-found", "-o", "name"
        ).stdout.split()
        if not left:
            break
        assert time.monotonic() < deadline, f"{left} outlived their InferenceModel"
        time.sleep(2)


def test_samples_apply_and_report_status(kind_cluster: KindCluster) -> None:
    """The samples on a node without their devices: accepted, reconciled, and their status says so."""
    kind_cluster.kubectl("apply", "-n", NS, "-f", str(ROOT / "samples" / "cpu-only.yaml"))
    deadline = time.monotonic() + 120
    while True:
        status = get(kind_cluster, "im/yard", "-n", NS).get("status", {})
        if status.get("observedGeneration") and status.get("conditions"):
            break
        assert time.monotonic() < deadline, "the operator never wrote the sample's status"
        time.sleep(2)
    kind_cluster.kubectl("get", "deployment/yard-vision", "-n", NS)
