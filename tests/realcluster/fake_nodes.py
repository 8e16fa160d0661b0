"""Fake nodes for a kubelet-less control plane: Node objects with declared capacity, and the kubelet's part for
the pods the real scheduler binds to them (kwok-like, in-process, on the API server's real HTTP protocol).

What it does, and nothing more:
- registers each Node (labels, capacity = allocatable, extended resources such as `coral.ai/tpu`), marks it Ready
  and removes the `not-ready` taint that admission puts on a new Node (no node-lifecycle controller runs);
- a pod bound to one of its nodes becomes Running and Ready (init containers Completed), with a fake pod IP;
- a pod being deleted is removed after `delete_delay` (as a kubelet would after the grace period), so Recreate
  rollouts, scale-downs and garbage collection finish;
- rules set by a test make matching pods fail the way a kubelet reports it: `CrashLoopBackOff` (restart count
  rising every `crash_interval`), `ImagePullBackOff`, or an init container that exits 1 with a termination message;
  or, for run-to-completion pods (a Job's, restartPolicy Never), end: `Succeeded` (exit 0) or `Failed` (exit 1),
  the rule's message as the main container's termination message (what a validator writes there). A rule may also
  require pod annotations (a pod template's, e.g. the model it runs), so one ReplicaSet's pods fail and not another's.

No containers run, no images are pulled, no probes, volumes or device plugins: the TPU is only declared capacity.
Runs its own event loop in a thread, so synchronous fixtures and async tests can both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RUNNING, CRASH_LOOP, IMAGE_PULL, INIT_FAILED = "Running", "CrashLoopBackOff", "ImagePullBackOff", "InitFailed"
NOT_READY = "NotReady"
"""The containers keep running but fail their readiness probe (a vision pod whose camera stopped streaming)."""
SUCCEEDED, FAILED = "Succeeded", "Failed"  # a pod that runs to completion ends, its message in the termination log


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    resources: Mapping[str, str] = field(default_factory=dict)  # extended resources, e.g. {"coral.ai/tpu": "1"}
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """Pods whose `namespace/name` matches `pattern` get `outcome` instead of Running."""

    pattern: str
    outcome: str
    message: str = "exit status 1"
    annotations: tuple[tuple[str, str], ...] = ()  # the pod must have these too

    def matches(self, key: str, pod: Mapping[str, Any] | None = None) -> bool:
        if re.search(self.pattern, key) is None:
            return False
        have = ((pod or {}).get("metadata") or {}).get("annotations") or {}
        return all(have.get(k) == v for k, v in self.annotations)


class FakeNodes:
    """Start with `start()`, stop with `stop()`; `fail(...)` adds a failure rule, `clear()` removes them all."""

    def __init__(
        self,
        server: str,
        token: str,
        ca: str,
        nodes: list[NodeSpec],
        *,
        delete_delay: float = 0.3,
        crash_interval: float = 2.0,
    ) -> None:
        self.server, self.nodes = server, {n.name: n for n in nodes}
        self.delete_delay, self.crash_interval = delete_delay, crash_interval
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = ssl.create_default_context(cafile=ca)
        self._rules: list[Rule] = []
        self._pods: dict[str, dict[str, Any]] = {}  # namespace/name -> last seen pod
        self._restarts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-nodes", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.errors: list[str] = []

    # ------------------------------------------------------------------------------------------- public, sync

    def start(self, timeout: float = 30.0) -> FakeNodes:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def fail(
        self,
        pattern: str,
        outcome: str = CRASH_LOOP,
        message: str = "exit status 1",
        annotations: Mapping[str, str] | None = None,
    ) -> Rule:
        """From now on, pods matching `pattern` (a regex on namespace/name) and having `annotations` get `outcome`."""
        rule = Rule(pattern, outcome, message, tuple(sorted((annotations or {}).items())))
        self._rules.append(rule)
        self._resync()
        return rule

    def clear(self, rule: Rule | None = None) -> None:
        """Remove one rule (or all): matching pods then start like any other (as after a fixed image)."""
        self._rules = [r for r in self._rules if rule is not None and r != rule]
        self._resync()

    def _resync(self) -> None:
        async def resync() -> None:
            for pod in list(self._pods.values()):
                await self._handle(pod)

        asyncio.run_coroutine_threadsafe(resync(), self._loop).result(10)

    # ------------------------------------------------------------------------------------------- API calls

    async def _request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        assert self._session is not None
        headers = {"Content-Type": content_type or "application/json"}
        data = json.dumps(body) if body is not None else None
        async with self._session.request(method, self.server + path, data=data, headers=headers) as response:
            text = await response.text()
            if response.status >= 400 and response.status not in (404, 409):
                self.errors.append(f"{method} {path}: {response.status} {text[:200]}")
            return response.status, (json.loads(text) if text.startswith("{") else {})

    async def _patch_status(self, path: str, status: Mapping[str, Any]) -> None:
        await self._request("PATCH", path + "/status", {"status": status}, "application/merge-patch+json")

    # ------------------------------------------------------------------------------------------- nodes

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers, connector=aiohttp.TCPConnector(ssl=self._ssl))
        for node in self.nodes.values():
            await self._register(node)
        pods: asyncio.Future[None] = self._loop.create_future()
        self._tasks = [
            asyncio.create_task(self._watch_pods(pods)),
            asyncio.create_task(self._crash_loop_ticker()),
        ]
        await pods  # the initial listing is handled: pods from an earlier run are picked up

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _register(self, node: NodeSpec) -> None:
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "fake-node",
            **node.labels,
        }
        await self._request("POST", "/api/v1/nodes", {"metadata": {"name": node.name, "labels": labels}})
        path = f"/api/v1/nodes/{node.name}"
        # Admission taints a new Node not-ready; the node-lifecycle controller that would lift it does not run.
        await self._request("PATCH", path, {"spec": {"taints": None}}, "application/merge-patch+json")
        capacity = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi", **node.resources}
        now = _now()
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "lastHeartbeatTime": now,
             "lastTransitionTime": now}
            for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                         ("PIDPressure", "SufficientPID"))
        ]  # fmt: skip
        conditions.append(
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node is ready",
             "lastHeartbeatTime": now, "lastTransitionTime": now}
        )  # fmt: skip
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node.name}],
            "nodeInfo": {
                "kubeletVersion": "v1.36.2", "kubeProxyVersion": "v1.36.2", "containerRuntimeVersion": "fake://1",
                "operatingSystem": "linux", "architecture": "amd64", "osImage": "fake", "kernelVersion": "fake",
                "machineID": node.name, "systemUUID": node.name, "bootID": node.name,
            },
        }  # fmt: skip
        await self._patch_status(path, status)

    # ------------------------------------------------------------------------------------------- pods

    async def _watch_pods(self, listed: asyncio.Future[None]) -> None:
        assert self._session is not None
        while True:
            try:
                _, listing = await self._request("GET", "/api/v1/pods")
                for pod in listing.get("items") or []:
                    await self._handle(pod)
                if not listed.done():
                    listed.set_result(None)
                version = listing["metadata"]["resourceVersion"]
                url = f"{self.server}/api/v1/pods?watch=true&resourceVersion={version}&allowWatchBookmarks=true"
                async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=90)) as stream:
                    async for line in stream.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break  # 410 Gone and friends: list again
                        if event["type"] in ("ADDED", "MODIFIED"):
                            await self._handle(event["object"])
                        elif event["type"] == "DELETED":
                            self._forget(event["object"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the API server restarted, a connection dropped: list and watch again
                self.errors.append(f"pod watch: {type(e).__name__}: {e}")
                await asyncio.sleep(0.5)

    def _forget(self, pod: Mapping[str, Any]) -> None:
        key = _key(pod)
        self._pods.pop(key, None)
        self._restarts.pop(key, None)

    async def _handle(self, pod: dict[str, Any]) -> None:
        if (pod.get("spec") or {}).get("nodeName") not in self.nodes:
            return
        key = _key(pod)
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._pods.pop(key, None)
            asyncio.get_running_loop().call_later(self.delete_delay, lambda: asyncio.ensure_future(self._finalize(pod)))
            return
        self._pods[key] = pod
        rule = next((r for r in self._rules if r.matches(key, pod)), None)
        status = self._status_for(pod, rule)
        if _signature(pod.get("status") or {}) != _signature(status):
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            await self._patch_status(path, status)

    async def _finalize(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        await self._request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)

    async def _crash_loop_ticker(self) -> None:
        while True:
            await asyncio.sleep(self.crash_interval)
            for key, pod in list(self._pods.items()):
                rule = next((r for r in self._rules if r.matches(key, pod)), None)
                if rule is not None and rule.outcome in (CRASH_LOOP, INIT_FAILED):
                    self._restarts[key] = self._restarts.get(key, 0) + 1
                    await self._handle(pod)

    def _status_for(self, pod: Mapping[str, Any], rule: Rule | None) -> dict[str, Any]:
        spec, meta = pod["spec"], pod["metadata"]
        node_index = list(self.nodes).index(spec["nodeName"])
        started = (pod.get("status") or {}).get("startTime") or _now()
        restarts = self._restarts.get(_key(pod), 0)
        outcome = rule.outcome if rule else RUNNING
        message = rule.message if rule else ""
        ok = outcome == RUNNING
        runs = outcome in (RUNNING, NOT_READY)

        def running(c: Mapping[str, Any]) -> dict[str, Any]:
            return {"running": {"startedAt": started}}

        def waiting(reason: str, container: Mapping[str, Any]) -> dict[str, Any]:
            """The kubelet's own words for each wait."""
            text = {
                CRASH_LOOP: f"back-off 10s restarting failed container={container['name']} pod={meta['name']}",
                IMAGE_PULL: f'Back-off pulling image "{container.get("image", "")}"',
            }.get(reason, "")
            return {"waiting": {"reason": reason, "message": text}}

        if outcome in (SUCCEEDED, FAILED):  # run to completion: every container ended, the main one with the message
            return _ended(pod, outcome, message, started)
        init_statuses = []
        for c in spec.get("initContainers") or []:
            if outcome == INIT_FAILED:
                state = waiting(CRASH_LOOP, c)
                last = {"terminated": {"exitCode": 1, "reason": "Error", "message": message, "finishedAt": _now()}}
                init_statuses.append(_container(c, False, restarts, state, last))
            elif c.get("restartPolicy") == "Always":  # a native sidecar: it keeps running beside the containers
                init_statuses.append(_container(c, True, 0, running(c), {}, started=True))
            else:
                done = {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": started}}
                init_statuses.append(_container(c, False, 0, done, {}))
        statuses = []
        for c in spec.get("containers") or []:
            if runs:
                statuses.append(_container(c, ok, 0, running(c), {}, started=True))
            elif outcome == CRASH_LOOP:
                last = {"terminated": {"exitCode": 1, "reason": "Error", "message": message, "finishedAt": _now()}}
                statuses.append(_container(c, False, restarts, waiting(CRASH_LOOP, c), last))
            elif outcome == IMAGE_PULL:
                statuses.append(_container(c, False, 0, waiting(IMAGE_PULL, c), {}))
            else:  # the main containers wait for a failing init container
                statuses.append(_container(c, False, 0, waiting("PodInitializing", c), {}))
        phase = "Running" if outcome in (RUNNING, NOT_READY, CRASH_LOOP) else "Pending"
        now = _now()
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "False" if outcome == INIT_FAILED else "True",
             "lastTransitionTime": now},
            {"type": "ContainersReady", "status": str(ok), "lastTransitionTime": now},
            {"type": "Ready", "status": str(ok), "lastTransitionTime": now},
        ]  # fmt: skip
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "podIP": f"10.244.{node_index}.{(abs(hash(meta['uid'])) % 250) + 2}",
            "startTime": started,
            "containerStatuses": statuses,
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        return status


def _ended(pod: Mapping[str, Any], outcome: str, message: str, started: str) -> dict[str, Any]:
    """The status of a pod that ran to completion: init containers done, main containers exited 0 (Succeeded) or 1
    (Failed), the first one with `message` as its termination message."""
    spec, now = pod["spec"], _now()
    code = 0 if outcome == SUCCEEDED else 1
    done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now}}
    statuses = []
    for index, c in enumerate(spec.get("containers") or []):
        ended: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                 "startedAt": started, "finishedAt": now}  # fmt: skip
        if index == 0 and message:
            ended["message"] = message
        statuses.append(_container(c, False, 0, {"terminated": ended}, {}))
    status: dict[str, Any] = {
        "phase": outcome,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ],
        "hostIP": "127.0.0.1",
        "startTime": started,
        "containerStatuses": statuses,
    }
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [_container(c, False, 0, done, {}) for c in spec["initContainers"]]
    return status


def _container(
    c: Mapping[str, Any],
    ready: bool,
    restarts: int,
    state: Mapping[str, Any],
    last: Mapping[str, Any],
    started: bool | None = None,
) -> dict[str, Any]:
    return {
        "name": c["name"],
        "image": c.get("image", ""),
        "imageID": f"fake://{c.get('image', '')}",
        "containerID": f"fake://{c['name']}",
        "ready": ready,
        "started": ready if started is None else started,
        "restartCount": restarts,
        "state": dict(state),
        "lastState": dict(last),
    }


def _key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _signature(status: Mapping[str, Any]) -> Any:
    """What decides whether a status patch is needed (timestamps left out, so a pod is written once per change)."""
    conds = sorted((c.get("type"), c.get("status")) for c in status.get("conditions") or [])

    def containers(key: str) -> list[Any]:
        out = []
        for c in status.get(key) or []:
            state = {k: (v or {}).get("reason") for k, v in (c.get("state") or {}).items()}
            out.append((c.get("name"), c.get("ready"), c.get("restartCount"), json.dumps(state, sort_keys=True)))
        return out

    return (status.get("phase"), conds, containers("containerStatuses"), containers("initContainerStatuses"))
