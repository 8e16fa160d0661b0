"""Fixtures of the real-cluster tier: the session's control plane (tests/conftest.py), a namespace per module, the
operator running with the chart's ServiceAccount, and the admin's client."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from cluster import RealClusterWithChart
from cluster_helpers import ClusterClient, running_operator


@pytest.fixture(scope="module")
def namespace(real_cluster: RealClusterWithChart) -> Iterator[str]:
    name = f"real-{secrets.token_hex(3)}"
    real_cluster.cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    real_cluster.cluster.api("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def operator(real_cluster: RealClusterWithChart, namespace: str) -> Iterator[Any]:
    with running_operator(namespace, real_cluster.operator_kubeconfig) as runner:
        yield runner


@pytest_asyncio.fixture
async def kube(real_cluster: RealClusterWithChart) -> AsyncIterator[ClusterClient]:
    client = await ClusterClient.from_kubeconfig(real_cluster.cluster.admin_kubeconfig)
    try:
        yield client
    finally:
        await client.close()


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro)
