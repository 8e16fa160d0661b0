"""Fixtures for the operator's integration tests: a cluster (emulated or real), the operator running in it, a client.

- `cluster` (module scope): by default a `RealisticEmulator` (kmock 0.8) on a loopback port in its own thread
  (see emulator.py). With `KORALL_TEST_KUBECONFIG=/path/to/kubeconfig`, a real cluster instead: the CRDs from
  `crds/` are applied first and the tests wait until they are Established. Each module gets its own namespace.
- `operator` (module scope): the real operator (`korall_operator.handlers`) run by `kopf.testing.KopfRunner` in
  its own thread and event loop, `--standalone`, watching only the test namespace, so it cannot fight an operator
  installed in the same cluster. Started once per module: the suite stays fast.
- `kube` (per test): an async client (the operator's own transport, plus create/list/delete for the tests).
- helpers in cluster_helpers.py: `eventually()` polls an async probe until it passes or a deadline expires (no
  fixed sleeps); `emulator_only()` skips a test on a real cluster.

Only what a real cluster would do by itself is emulator-only: tests that write a Deployment's status (the
emulator runs no Deployment controller) are marked with `emulator_only`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from cluster_helpers import Cluster, ClusterClient, eventually
from emulator import ROOT, EmulatedCluster
from korall_operator.k8s import resource_path

REAL_KUBECONFIG_ENV = "KORALL_TEST_KUBECONFIG"
logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per emulator request drowns the output


def _real_kubeconfig() -> Path | None:
    value = os.environ.get(REAL_KUBECONFIG_ENV)
    return Path(value) if value else None


async def _prepare_real_cluster(namespace: str) -> None:
    """Apply the CRDs (server-side) and wait until they are Established; create the test namespace."""
    client = await ClusterClient.from_environment()
    try:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            await client._call(
                "PATCH",
                resource_path("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd["metadata"]["name"]),
                body=crd,
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", "korall-tests"), ("force", "true")],
            )

            async def established(name: str = crd["metadata"]["name"]) -> None:
                got = await client.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)
                conds = {c["type"]: c["status"] for c in ((got or {}).get("status") or {}).get("conditions") or []}
                assert conds.get("Established") == "True", conds

            await eventually(established, timeout=60)
        await client.create("v1", "namespaces", None, {"metadata": {"name": namespace}})
    finally:
        await client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    namespace = f"korall-test-{secrets.token_hex(3)}"
    real = _real_kubeconfig()
    saved = os.environ.get("KUBECONFIG")
    if real is not None:
        os.environ["KUBECONFIG"] = str(real)
        asyncio.run(_prepare_real_cluster(namespace))
        try:
            yield Cluster(kubeconfig=real, namespace=namespace, emulated=None)
        finally:
            asyncio.run(_delete_namespace(namespace))
            _restore_env("KUBECONFIG", saved)
        return
    emulated = EmulatedCluster(tmp_path_factory.mktemp("kmock")).start()
    emulated.create_namespace(namespace)
    os.environ["KUBECONFIG"] = str(emulated.kubeconfig)
    try:
        yield Cluster(kubeconfig=emulated.kubeconfig, namespace=namespace, emulated=emulated)
    finally:
        emulated.stop()
        _restore_env("KUBECONFIG", saved)


async def _delete_namespace(namespace: str) -> None:
    client = await ClusterClient.from_environment()
    try:
        await client.delete("v1", "namespaces", None, namespace)
    finally:
        await client.close()


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[Any]:
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", cluster.namespace, "-m", "korall_operator.handlers"]
    with KopfRunner(args, timeout=30) as runner:
        yield runner
    assert runner.exception is None, runner.output[-4000:]


@pytest_asyncio.fixture
async def kube(cluster: Cluster) -> AsyncIterator[ClusterClient]:
    client = await ClusterClient.from_environment()
    try:
        yield client
    finally:
        await client.close()
