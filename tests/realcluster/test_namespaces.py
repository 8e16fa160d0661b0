"""Namespaces on a real API server: an install that may see one namespace only, and a namespace deleted with many
models in it. Each test runs its own operator (the module-wide one would watch another namespace)."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.error

import pytest
from cluster import RealClusterWithChart
from cluster_helpers import API, ClusterClient, eventually, running_operator
from test_operator import CPU_MODEL, model, ready

pytestmark = pytest.mark.usefixtures("controllers")


async def test_a_namespaced_install_reconciles_at_once_with_only_its_role(
    real_cluster: RealClusterWithChart, kube: ClusterClient
) -> None:
    """`watchNamespace` gives the operator a Role in that namespace and nothing cluster-wide on namespaces: kopf
    must not try to list them (a 403, retried for about a minute, during which nothing was reconciled)."""
    namespace = f"scoped-{secrets.token_hex(2)}"
    cluster = real_cluster.cluster
    account = cluster.install_chart("scoped", namespace, f"watchNamespace={namespace}")
    kubeconfig = cluster.service_account_kubeconfig(namespace, account, cluster.plane.workdir / f"{namespace}.kc")
    try:
        with running_operator(namespace, kubeconfig) as runner:
            started = time.monotonic()
            await kube.create(API, "inferencemodels", namespace, model("scoped", model={"file": CPU_MODEL}))
            await eventually(lambda: ready(kube, namespace, "inferencemodels", "scoped"), timeout=30)
            elapsed = time.monotonic() - started
        assert elapsed < 10, f"a change 0 s after start was served after {elapsed:.1f} s"
        assert "Not enough permissions" not in runner.output
    finally:
        cluster.run("helm", "uninstall", "scoped", "--namespace", namespace)
        cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")


async def test_deleting_a_namespace_of_many_models_logs_no_error(
    real_cluster: RealClusterWithChart, kube: ClusterClient, garbage_collection: float
) -> None:
    """The children go first (garbage collection) while their models still exist: the operator must not try to
    put them back into a namespace that refuses new objects, nor log an error per model."""
    namespace = f"doomed-{secrets.token_hex(2)}"
    cluster = real_cluster.cluster
    cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    names = [f"m{i}" for i in range(30)]
    with running_operator(namespace, real_cluster.operator_kubeconfig) as runner:
        await asyncio.gather(
            *(kube.create(API, "inferencemodels", namespace, model(n, model={"file": CPU_MODEL})) for n in names)
        )
        for name in names:
            await eventually(lambda n=name: ready(kube, namespace, "inferencemodels", n), timeout=60)
        cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")

        async def gone() -> None:
            try:
                cluster.api("GET", f"/api/v1/namespaces/{namespace}")
            except urllib.error.HTTPError as e:
                assert e.code == 404
                return
            raise AssertionError(f"namespace {namespace} still there")

        await eventually(gone, timeout=120, interval=0.5)
        await asyncio.sleep(2)  # what the operator does with the last events
    errors = [line for line in runner.output.splitlines() if "ERROR" in line or "Traceback" in line]
    assert not errors, "\n".join(errors[:10])
