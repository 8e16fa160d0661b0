"""One real control plane with fake nodes, the chart installed by a real helm, and credentials to act as the operator.

`RealCluster.start()` is what the session fixture (tests/conftest.py) and `bench/bench_operator.py --real` call:
the control plane (controlplane.py), the fake nodes below (fake_nodes.py), then `helm install` of the chart, whose
CRDs, ServiceAccount and RBAC are then the ones under test. `operator_kubeconfig()` is a kubeconfig with a token of
the chart's ServiceAccount: an operator run with it has exactly the chart's permissions, no more.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane import ROOT, ControlPlane, find_assets, kubeconfig
from fake_nodes import FakeNodes, NodeSpec

CHART = ROOT / "charts" / "korall"
RELEASE_NAMESPACE = "korall-system"

TPU_NODE, SOLO_TPU_NODE, PCI_NODE, CPU_NODE = "edge-node-1", "edge-solo", "edge-pci-1", "cpu-1"
CAMERA_NODE, CAMERA_DEVICE = "edge-cam-1", "/dev/video4"
# What the chart's device plugin would advertise (charts/korall/templates/device-plugin.yaml): coral.ai/tpu,
# korall.io/video<N> per /dev/video<N>, korall.io/snd for /dev/snd.
NODES = [
    # The samples' node (samples/*.yaml pin to it) and the general-purpose device node: several USB accelerators,
    # and as many units of its camera and microphone as the tests of all namespaces together use at once.
    NodeSpec(TPU_NODE, {"coral.ai/tpu": "8", "korall.io/video0": "8", "korall.io/snd": "8"}, {"korall.io/tpu": "usb"}),
    # One TPU and nothing else: what scheduling and Recreate rollouts are tested on (pods select it by hostname).
    NodeSpec(SOLO_TPU_NODE, {"coral.ai/tpu": "1"}, {"korall.io/tpu": "usb"}),
    NodeSpec(PCI_NODE, {"coral.ai/tpu": "2"}, {"korall.io/tpu": "pci"}),
    NodeSpec(CPU_NODE),
    # One webcam, a device no other test asks for: where "one camera, one pod" is tested.
    NodeSpec(CAMERA_NODE, {f"korall.io/video{CAMERA_DEVICE.removeprefix('/dev/video')}": "1"}),
]


def tools_bin() -> Path:
    """helm and kubectl, pinned and checked (scripts/tools.sh installs them once)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "tools.sh")], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class RealCluster:
    plane: ControlPlane
    tools: Path
    _nodes: FakeNodes | None = None
    _gc_probe: concurrent.futures.Future[float] | None = None

    @property
    def has_controllers(self) -> bool:
        """kube-controller-manager and kube-scheduler run (envtest's assets alone have only the API server)."""
        return self.plane.assets.full

    @property
    def nodes(self) -> FakeNodes:
        assert self._nodes is not None, "the fake nodes start with the controllers"
        return self._nodes

    @classmethod
    def start(cls, workdir: Path, *chart_values: str, nodes: list[NodeSpec] = NODES) -> RealCluster:
        """The API server, `helm install` of the chart (CRDs first), then the controllers and the fake nodes."""
        plane = ControlPlane(find_assets(), workdir).start_core()
        try:
            cluster = cls(plane, tools_bin())
            cluster.install_chart("korall", RELEASE_NAMESPACE, *chart_values)
            plane.start_controllers()
            cluster._nodes = FakeNodes(plane.server, plane.admin_token, str(plane.ca), nodes).start()
        except BaseException:
            plane.stop()
            raise
        return cluster

    def stop(self) -> None:
        if self._nodes is not None:
            self._nodes.stop()
        self.plane.stop()

    @property
    def admin_kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """helm or kubectl against this cluster as its admin."""
        env = {**os.environ, "KUBECONFIG": str(self.admin_kubeconfig), "HELM_CACHE_HOME": str(self.plane.workdir)}
        result = subprocess.run(
            [str(self.tools / tool), *args], capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def install_chart(self, release: str, namespace: str, *values: str) -> str:
        """`helm install` of the chart (CRDs included); returns the name of its ServiceAccount."""
        sets = [arg for value in values for arg in ("--set", value)]
        self.run("helm", "install", release, str(CHART), "--namespace", namespace, "--create-namespace", *sets)
        return release if "korall" in release else f"{release}-korall"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One admin API call (synchronous: for fixtures)."""
        context = ssl.create_default_context(cafile=str(self.plane.ca))
        request = urllib.request.Request(
            self.plane.server + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.plane.admin_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def probe_garbage_collection(self) -> None:
        """Start wait_for_garbage_collection in a thread: the tests that need it wait for it, the others do not."""
        self._gc_probe = concurrent.futures.ThreadPoolExecutor(1).submit(self.wait_for_garbage_collection)

    def garbage_collection_ready(self) -> float:
        if self._gc_probe is None:
            self.probe_garbage_collection()
        assert self._gc_probe is not None
        return float(self._gc_probe.result())

    def wait_for_garbage_collection(self, timeout: float = 90.0) -> float:
        """Wait until the garbage collector cascades deletions from korall's CRs; returns how long that took.

        The controller manager finds new resource types (the CRDs helm just installed) by discovery every 30 s;
        until then a deleted InferenceModel's children linger. A throwaway model with a ConfigMap it owns is
        deleted, and the ConfigMap's disappearance says the collector knows the type.
        """
        namespace = "gc-probe"
        self.api("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        owner = self.api(
            "POST",
            f"/apis/korall.io/v1alpha1/namespaces/{namespace}/inferencemodels",
            {"apiVersion": "korall.io/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "probe"},
             "spec": {"model": {"file": "probe.tflite"}}},
        )  # fmt: skip
        ref = {"apiVersion": "korall.io/v1alpha1", "kind": "InferenceModel", "name": "probe",
               "uid": owner["metadata"]["uid"]}  # fmt: skip
        self.api(
            "POST",
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"metadata": {"name": "dependent", "ownerReferences": [ref]}},
        )
        started = time.monotonic()
        self.api("DELETE", f"/apis/korall.io/v1alpha1/namespaces/{namespace}/inferencemodels/probe")
        while time.monotonic() - started < timeout:
            try:
                self.api("GET", f"/api/v1/namespaces/{namespace}/configmaps/dependent")
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    self.api("DELETE", f"/api/v1/namespaces/{namespace}")
                    return time.monotonic() - started
                raise
            time.sleep(0.5)
        raise TimeoutError(f"the garbage collector did not cascade an InferenceModel's deletion in {timeout} s")

    def service_account_kubeconfig(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig holding a token of that ServiceAccount (TokenRequest API, as the kubelet gets one)."""
        token = self.api(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}},
        )["status"]["token"]
        path.write_text(
            kubeconfig(self.plane.server, self.plane.ca, f"system:serviceaccount:{namespace}:{service_account}", token)
        )
        return path


@dataclass(frozen=True)
class RealClusterWithChart:
    """The session's real cluster with the chart installed (cluster-wide release `korall` in korall-system)."""

    cluster: RealCluster
    operator_kubeconfig: Path  # a token of the chart's ServiceAccount: exactly the chart's RBAC
