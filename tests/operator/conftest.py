"""Fixtures for the operator's integration tests: a cluster (emulated or real), the operator running in it, a client.

- `cluster` (module scope): by default a `RealisticEmulator` (kmock 0.8) on a loopback port in its own thread
  (see emulator.py). With `KORALL_TEST_KUBECONFIG=/path/to/kubeconfig`, a real cluster instead: the CRDs from
  `crds/` are applied first and the tests wait until they are Established. Each module gets its own namespace.
- `operator` (module scope): the real operator (`korall_operator.handlers`) run by `kopf.testing.KopfRunner` in
  its own thread and event loop, `--standalone`, watching only the test namespace, so it cannot fight an operator
  installed in the same cluster. Started once per module: the suite stays fast.
- `kube` (per test): an async client (the operator's own transport, plus create/list/delete for the tests).
- `eventually()`: poll an async probe until it passes or a deadline expires (no fixed sleeps).

Only what a real cluster would do by itself is emulator-only: tests that write a Deployment's status (the
emulator runs no Deployment controller) are marked with `emulator_only`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import yaml
from emulator import ROOT, EmulatedCluster
from korall_operator.k8s import KubeClient, NotFound, resource_path

REAL_KUBECONFIG_ENV = "KORALL_TEST_KUBECONFIG"
logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per emulator request drowns the output
API = "korall.io/v1alpha1"
T = TypeVar("T")


@dataclass
class Cluster:
    kubeconfig: Path
    namespace: str
    emulated: EmulatedCluster | None

    @property
    def is_emulated(self) -> bool:
        return self.emulated is not None


class ClusterClient(KubeClient):
    """The operator's client plus the verbs only tests need."""

    async def create(
        self, api_version: str, plural: str, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._call("POST", resource_path(api_version, plural, namespace), body=body)

    async def list(
        self, api_version: str, plural: str, namespace: str | None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self._call("GET", resource_path(api_version, plural, namespace), query=query)
        return list(result.get("items") or [])

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call("DELETE", resource_path(api_version, plural, namespace, name))

    async def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Events whose involvedObject is the named object (filtered here: the emulator has no field selectors)."""
        events = await self.list("v1", "events", namespace)
        return [e for e in events if (e.get("involvedObject") or {}).get("name") == name]


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 15.0, interval: float = 0.05) -> T:  # noqa: ASYNC109
    """Await `probe()` until it returns without AssertionError; re-raise its last failure at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await probe()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


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


def emulator_only(cluster: Cluster, why: str) -> None:
    if not cluster.is_emulated:
        pytest.skip(f"needs the emulator: {why}")
