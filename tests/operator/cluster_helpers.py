"""Helpers of the operator's integration tests, shared by conftest.py and the test modules.

A plain module (not conftest.py) so that tests import it by a name no other test folder uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from emulator import EmulatedCluster
from korall_operator.k8s import KubeClient, NotFound, login, resource_path

API = "korall.io/v1alpha1"
T = TypeVar("T")


@dataclass
class Cluster:
    kubeconfig: Path  # the admin's: what the tests act with
    namespace: str
    emulated: EmulatedCluster | None
    operator_kubeconfig: Path | None = None  # what the operator logs in with (the chart's RBAC); None: the admin's

    @property
    def is_emulated(self) -> bool:
        return self.emulated is not None


class ClusterClient(KubeClient):
    """The operator's client plus the verbs only tests need."""

    @classmethod
    async def from_kubeconfig(cls, path: Path) -> ClusterClient:
        """A client for that kubeconfig, whatever $KUBECONFIG says (the operator may run as someone else)."""
        saved = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(path)
        try:
            return cls(login())
        finally:
            if saved is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = saved

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


@contextlib.contextmanager
def running_operator(
    namespace: str,
    kubeconfig: Path,
    *,
    resync_s: float = 2.0,
    env: dict[str, str] | None = None,
    refusals_allowed: bool = False,
) -> Iterator[Any]:
    """The real operator (`korall_operator.handlers`) run by kopf's KopfRunner in its own thread and event loop, as
    the chart runs it with watchNamespace set: the namespace on kopf's command line and in the settings.

    `kubeconfig` is what it logs in with. A short resync interval, so that tests of the resync loop are quick.
    On exit: the operator must not have failed, nor been refused anything (a 403 means the chart's RBAC lacks it),
    unless `refusals_allowed` (an API server that restarts refuses everything until its RBAC caches are warm).
    """
    from kopf.testing import KopfRunner

    settings = {
        "KUBECONFIG": str(kubeconfig),
        "KORALL_WATCH_NAMESPACE": namespace,
        "KORALL_RESYNC_INTERVAL_S": str(resync_s),
        "KORALL_METRICS_PORT": "0",  # no fixed port: operators of other test runs on this machine would share it
        **(env or {}),
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    args = ["run", "--standalone", f"--namespace={namespace}", "-m", "korall_operator.handlers"]
    try:
        with KopfRunner(args, timeout=30) as runner:
            yield runner
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert runner.exception is None, runner.output[-4000:]
    refused = [line for line in runner.output.splitlines() if "Forbidden" in line or "forbidden" in line]
    assert refusals_allowed or not refused, "the operator was refused (RBAC?):\n" + "\n".join(refused[:5])


def emulator_only(cluster: Cluster, why: str) -> None:
    if not cluster.is_emulated:
        pytest.skip(f"needs the emulator: {why}")


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """The object's status condition of that type (fails if it has none)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    raise AssertionError(f"no {type_} condition in {obj.get('status')}")


async def get_im(kube: ClusterClient, ns: str, name: str) -> dict[str, Any]:
    im = await kube.get(API, "inferencemodels", ns, name)
    assert im is not None
    return im


async def warned_once(kube: ClusterClient, ns: str, name: str, reason: str) -> None:
    """One Warning Event `reason` of `name`, no more. The operator posts it just after the condition it reports is
    written (follow.announce): wait for it with `eventually`, never read it once."""
    warnings = [e for e in await kube.events_for(ns, name) if e.get("type") == "Warning"]
    assert [e["reason"] for e in warnings].count(reason) == 1, "one Warning Event per transition"


async def has_event(kube: ClusterClient, ns: str, name: str, reason: str, type_: str = "Normal") -> dict[str, Any]:
    events = await kube.events_for(ns, name)
    found = [e for e in events if e.get("reason") == reason and e.get("type") == type_]
    assert found, f"no {type_} Event {reason} for {name}: {[(e.get('type'), e.get('reason')) for e in events]}"
    return found[0]
