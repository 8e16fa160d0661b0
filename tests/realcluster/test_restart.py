"""The operator across a restart of the API server (as in a control-plane upgrade): it carries on by itself.

Its own operator run, not the shared one: while the restarted server warms its RBAC caches it answers 403 for a
moment, which kopf retries; elsewhere any 403 fails the test run as a missing permission of the chart.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import RealClusterWithChart
from cluster_helpers import API, ClusterClient, eventually, running_operator
from korall_operator.manifests import child_name
from test_operator import CPU_MODEL, model, ready

pytestmark = pytest.mark.usefixtures("controllers", "operator")


@pytest.fixture(scope="module")
def operator(real_cluster: RealClusterWithChart, namespace: str) -> Iterator[Any]:
    with running_operator(namespace, real_cluster.operator_kubeconfig, refusals_allowed=True) as runner:
        yield runner


async def test_the_operator_carries_on_after_the_api_server_restarts(
    real_cluster: RealClusterWithChart, namespace: str, kube: ClusterClient
) -> None:
    name = f"restart-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", namespace, model(name, model={"file": CPU_MODEL}))
    first = await eventually(lambda: ready(kube, namespace, "inferencemodels", name), timeout=30)

    real_cluster.cluster.plane.restart_apiserver()

    # The test's own connections died with the server: a new client, then a change the operator must pick up.
    fresh = await ClusterClient.from_kubeconfig(real_cluster.cluster.admin_kubeconfig)
    try:
        await eventually(lambda: fresh.merge_patch(API, "inferencemodels", namespace, name, {"spec": {"topK": 7}}))

        async def rolled_out() -> None:
            im = await ready(fresh, namespace, "inferencemodels", name)
            assert im["status"]["specHash"] != first["status"]["specHash"]

        await eventually(rolled_out, timeout=60)
        deployment = await fresh.get("apps/v1", "deployments", namespace, child_name(name, "vision"))
        assert deployment is not None
        env = {
            e["name"]: e["value"]
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            if "value" in e
        }
        assert env["TOPK"] == "7"
    finally:
        await fresh.close()


async def test_a_restarted_operator_catches_up_within_seconds(
    real_cluster: RealClusterWithChart, kube: ClusterClient
) -> None:
    """A change made while the operator was down is served seconds after it is back (it took 17 s when the first
    status write after a restart lost three 409s in a row to the Deployment follower and waited 15 s)."""
    namespace = f"restart-{secrets.token_hex(2)}"
    real_cluster.cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    names = [f"m{i}" for i in range(5)]
    with running_operator(namespace, real_cluster.operator_kubeconfig):
        for name in names:
            await kube.create(API, "inferencemodels", namespace, model(name, model={"file": CPU_MODEL}))
        for name in names:
            await eventually(lambda n=name: ready(kube, namespace, "inferencemodels", n), timeout=60)
    before = await kube.get(API, "inferencemodels", namespace, "m0")
    assert before is not None
    await kube.merge_patch(API, "inferencemodels", namespace, "m0", {"spec": {"scoreThreshold": 0.7}})
    with running_operator(namespace, real_cluster.operator_kubeconfig):
        started = time.monotonic()

        async def caught_up() -> None:
            im = await ready(kube, namespace, "inferencemodels", "m0")
            assert im["status"]["specHash"] != before["status"]["specHash"]

        await eventually(caught_up, timeout=60)
        elapsed = time.monotonic() - started
    real_cluster.cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")
    assert elapsed < 10, f"caught up after {elapsed:.1f} s"
