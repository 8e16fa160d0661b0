"""Fixtures shared by every test folder: the real control plane (tests/realcluster/), started once per session.

The real-cluster tier needs the Kubernetes server binaries (`KUBEBUILDER_ASSETS`, or what scripts/kube-assets.sh
unpacks into .cache/kube-assets; `make test` runs it). Where they are missing, every test that asks for
`real_cluster` is skipped with the reason, and the emulator-backed tests still run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster import RELEASE_NAMESPACE, RealCluster, RealClusterWithChart
from controlplane import ControlPlaneUnavailable


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealClusterWithChart]:
    try:
        cluster = RealCluster.start(tmp_path_factory.mktemp("realcluster"))
    except ControlPlaneUnavailable as e:
        pytest.skip(f"real control plane unavailable: {e}")
    try:
        cluster.probe_garbage_collection()  # in the background: see garbage_collection below
        kubeconfig = cluster.service_account_kubeconfig(
            RELEASE_NAMESPACE, "korall", cluster.plane.workdir / "operator.kubeconfig"
        )
        yield RealClusterWithChart(cluster, kubeconfig)
    finally:
        cluster.stop()


@pytest.fixture
def garbage_collection(real_cluster: RealClusterWithChart, controllers: None) -> float:
    """For tests that need deletions to cascade: waits (once) until the collector knows korall's CRDs."""
    return real_cluster.cluster.garbage_collection_ready()


NO_CONTROLLERS = (
    "needs kube-controller-manager and kube-scheduler beside kube-apiserver (envtest's assets have only the API "
    "server and etcd; add them from the same release, as .github/workflows/real-control-plane.yml does)"
)


@pytest.fixture(scope="session")
def controllers(real_cluster: RealClusterWithChart) -> None:
    """For tests that need real Deployments, pods, scheduling or garbage collection."""
    if not real_cluster.cluster.has_controllers:
        pytest.skip(NO_CONTROLLERS)
