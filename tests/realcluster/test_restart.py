"""The operator across a restart of the API server (as in a control-plane upgrade): it carries on by itself.

Its own operator run, not the shared one: while the restarted server warms its RBAC caches it answers 403 for a
moment, which kopf retries; elsewhere any 403 fails the test run as a missing permission of the chart.
"""

from __future__ import annotations

import secrets
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
        env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["TOPK"] == "7"
    finally:
        await fresh.close()
