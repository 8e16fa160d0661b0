"""Operator bench: reconcile latency and the cost of 1000 InferenceModels, on a real API server or the emulator.

`--real` (the figures the README quotes): the real control plane of the test tier (tests/realcluster: etcd,
kube-apiserver, controller manager, scheduler, fake nodes; the chart installed by helm), the operator running with
the chart's ServiceAccount. Every InferenceModel then gets a real Deployment, ReplicaSet and Pod, and the operator
watches all of them, as in a cluster. Without `--real`: the kmock emulator (tests/operator/emulator.py) in this
process, which runs no controllers (no pods) and validates nothing: quicker, and a lower bound.

Either way the operator runs as a separate process, `python -m korall_operator`, exactly as in its image, so its
RSS is its own.

1. Latency: 200 changes one after the other (100 creates of a new InferenceModel, 100 patches of a pod-affecting
   field of an existing one); each is timed from just before the API request to the moment the child Deployment
   with the new pod-template hash is stored (emulator: a write hook; real: this bench's own watch, which adds the
   watch delivery, a millisecond or two).
2. Scale: 1000 InferenceModels created at once (20 concurrent requests); total time until every one has its
   Deployment written and its status reporting the generation it reconciled; operator RSS before and after.

Targets: p95 latency <= 200 ms; operator RSS <= 150 MB with 1000 CRs. `--scale N` changes the 1000. Exits non-zero
if a target fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT / "tests" / "operator"),
    str(ROOT / "tests" / "realcluster"),
    str(ROOT / "operator"),
    str(ROOT / "contract"),
]

from _service import cpu_seconds  # noqa: E402
from emulator import EmulatedCluster  # noqa: E402

API = "/apis/korall.io/v1alpha1/namespaces/bench/inferencemodels"
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
LATENCY_TARGET_MS = 200.0
RSS_TARGET_MB = 150.0


class Tracker:
    """Fed by the emulator's write hook (in the emulator's thread): when each child and status was written."""

    def __init__(self) -> None:
        self.deployments: dict[str, tuple[float, str]] = {}  # InferenceModel name -> (time, template hash)
        self.deployments_first: dict[str, float] = {}  # InferenceModel name -> when its Deployment was first seen
        self.reconciled: dict[str, float] = {}  # InferenceModel name -> time its status observed its generation
        self.configmaps: dict[str, float] = {}  # ConfigMap name -> time it was seen (the control plane's floor)
        self.models_seen: dict[str, float] = {}  # InferenceModel name -> when its first watch event came

    def __call__(self, plural: str, type_: str, body: dict[str, Any]) -> None:
        now = time.perf_counter()
        if plural == "deployments" and type_ != "DELETED":
            owner = body["metadata"]["labels"].get("korall.io/inference-model")
            annotations = body["spec"]["template"]["metadata"].get("annotations") or {}
            if owner:
                self.deployments[owner] = (now, annotations.get("korall.io/spec-hash", ""))
                self.deployments_first.setdefault(owner, now)
        elif plural == "configmaps":
            self.configmaps.setdefault(body["metadata"]["name"], now)
        elif plural == "inferencemodels":
            self.models_seen.setdefault(body["metadata"]["name"], now)
            status = body.get("status") or {}
            if status.get("observedGeneration") == body["metadata"].get("generation"):
                self.reconciled.setdefault(body["metadata"]["name"], now)


def inference_model(name: str, threshold: float = 0.5) -> dict[str, Any]:
    return {
        "apiVersion": "korall.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": {"model": {"file": CPU_MODEL}, "scoreThreshold": threshold},
    }


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def wait_for(predicate: Any, timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def follow(http: aiohttp.ClientSession, tracker: Tracker) -> None:
    """Feed the tracker from watches of the bench namespace (real mode: the API server has no write hook)."""

    async def watch(path: str, plural: str) -> None:
        while True:
            async with http.get(path) as listing:
                version = (await listing.json())["metadata"]["resourceVersion"]
            query = f"{path}?watch=true&resourceVersion={version}"
            async with http.get(query, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as stream:
                async for line in stream.content:
                    event = json.loads(line)
                    if event["type"] != "ERROR":
                        tracker(plural, event["type"], event["object"])

    await asyncio.gather(
        watch("/apis/apps/v1/namespaces/bench/deployments", "deployments"),
        watch(API, "inferencemodels"),
        watch("/api/v1/namespaces/bench/configmaps", "configmaps"),
    )


async def run(
    http_args: dict[str, Any], tracker: Tracker | None, operator_pid: int, scale: int
) -> list[tuple[str, str, str, bool]]:
    rows: list[tuple[str, str, str, bool]] = []
    http_args = dict(http_args)
    if "ssl" in http_args:  # a connector needs the running loop: made here
        http_args["connector"] = aiohttp.TCPConnector(ssl=http_args.pop("ssl"))
    async with aiohttp.ClientSession(**http_args) as http:
        following = None
        if tracker is None:
            tracker = Tracker()
            following = asyncio.create_task(follow(http, tracker))

        async def post(body: dict[str, Any]) -> None:
            async with http.post(API, json=body) as rsp:
                assert rsp.status == 201, await rsp.text()

        async def patch(name: str, spec: dict[str, Any]) -> None:
            headers = {"Content-Type": "application/merge-patch+json"}
            async with http.patch(f"{API}/{name}", json={"spec": spec}, headers=headers) as rsp:
                assert rsp.status == 200, await rsp.text()

        # Warm-up: the operator is up once it reconciles a first model.
        await post(inference_model("warmup"))
        await wait_for(lambda: "warmup" in tracker.deployments, 60, "the operator to start")
        idle_rss, _ = rss_mb(operator_pid)

        latencies: list[float] = []
        starts: dict[str, float] = {}
        cpu_before, wall_before = cpu_seconds(operator_pid), time.perf_counter()
        for i in range(200):
            if i % 2 == 0:
                name, old = f"lat-{i}", None
                t0 = starts[name] = time.perf_counter()
                await post(inference_model(name))
            else:
                name = f"lat-{i - 1}"
                old = tracker.deployments[name][1]
                t0 = time.perf_counter()
                await patch(name, {"scoreThreshold": 0.3})
            await wait_for(
                lambda n=name, o=old: n in tracker.deployments and tracker.deployments[n][1] != o, 10, f"{name}"
            )
            latencies.append((tracker.deployments[name][0] - t0) * 1000)
        operator_cpu = cpu_seconds(operator_pid) - cpu_before
        busy = operator_cpu / (time.perf_counter() - wall_before)
        p50 = statistics.median(latencies)
        p95 = statistics.quantiles(latencies, n=20)[-1]
        rows.append(("reconcile latency p50 (create/patch -> Deployment)", f"{p50:.1f} ms", "-", True))
        rows.append(("reconcile latency p95", f"{p95:.1f} ms", f"<= {LATENCY_TARGET_MS:.0f} ms", p95 <= 200))
        rows.append(("operator CPU per change (busy share of one core)", f"{operator_cpu * 1000 / 200:.1f} ms",
                     f"({busy:.0%})", True))  # fmt: skip
        if following is not None:  # real: what the control plane alone takes for one write seen through a watch
            floor: list[float] = []
            for i in range(100):
                t0 = time.perf_counter()
                async with http.post("/api/v1/namespaces/bench/configmaps", json={"metadata": {"name": f"floor-{i}"}}):
                    pass
                await wait_for(lambda n=f"floor-{i}": n in tracker.configmaps, 10, "a ConfigMap")
                floor.append((tracker.configmaps[f"floor-{i}"] - t0) * 1000)
            one = statistics.median(floor)
            rows.append(("control plane alone: a write seen through a watch, p50", f"{one:.1f} ms", "-", True))
            # A reconcile is two such in a row: the InferenceModel reaches the operator, its Deployment this bench.
            rows.append(
                ("reconcile p50 minus 2 x that (operator and its applies)", f"{p50 - 2 * one:.1f} ms", "-", True)
            )
            # The 100 creates, in two legs: admission of the InferenceModel (CRD schema, CEL rules, the chart's
            # ValidatingAdmissionPolicies) until this bench's watch sees it; then the operator and its applies.
            created = [f"lat-{i}" for i in range(0, 200, 2)]
            admitted = statistics.median(tracker.models_seen[n] - starts[n] for n in created) * 1000
            applied = statistics.median(tracker.deployments_first[n] - tracker.models_seen[n] for n in created) * 1000
            rows.append(("create: POST -> InferenceModel seen, p50", f"{admitted:.1f} ms", "-", True))
            rows.append(("create: InferenceModel seen -> its Deployment seen, p50", f"{applied:.1f} ms", "-", True))

        names = [f"scale-{i}" for i in range(scale)]
        limit = asyncio.Semaphore(20)

        async def create(name: str) -> None:
            async with limit:
                await post(inference_model(name))

        t0 = time.perf_counter()
        await asyncio.gather(*(create(n) for n in names))
        created_s = time.perf_counter() - t0
        await wait_for(lambda: all(n in tracker.reconciled for n in names), 600, f"{scale} models reconciled")
        total_s = max(tracker.reconciled[n] for n in names) - t0
        await asyncio.sleep(2)  # let the status followers settle before reading memory
        rss, peak = rss_mb(operator_pid)
        rows.append((f"{scale} InferenceModels: all created (API)", f"{created_s:.1f} s", "-", True))
        rows.append((f"{scale} InferenceModels: all reconciled", f"{total_s:.1f} s", "-", True))
        rows.append((f"{scale} InferenceModels: throughput", f"{scale / total_s:.0f} /s", "-", True))
        rows.append(("operator RSS idle (after warm-up)", f"{idle_rss:.0f} MB", "-", True))
        ok = rss <= RSS_TARGET_MB
        rows.append((f"operator RSS with {scale + 101} CRs (peak {peak:.0f} MB)", f"{rss:.0f} MB", "<= 150 MB", ok))
        if following is not None:
            following.cancel()
    return rows


def image_env() -> dict[str, str]:
    """The environment the operator image sets for the process (Dockerfile.operator's ENV lines that tune it)."""
    found = re.findall(r"^ENV (MALLOC_ARENA_MAX)=(\S+)", (ROOT / "Dockerfile.operator").read_text(), re.MULTILINE)
    return dict(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1000, help="how many InferenceModels for the scale run")
    parser.add_argument("--real", action="store_true", help="a real control plane (tests/realcluster) instead")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("contract", "operator"))}
    env.update(image_env())
    env.pop("KUBERNETES_SERVICE_HOST", None)
    stack = contextlib.ExitStack()
    if args.real:
        from cluster import NODES, RELEASE_NAMESPACE, RealCluster
        from fake_nodes import NodeSpec

        # Room for every pod: 110 pods a node is the kubelet's default, and 1000 models make 1000 pods.
        roomy = [NodeSpec(n.name, {**n.resources, "pods": "1000"}, n.labels) for n in NODES]
        real = RealCluster.start(workdir, nodes=roomy)
        stack.callback(real.stop)
        real.api("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
        kubeconfig = real.service_account_kubeconfig(RELEASE_NAMESPACE, "korall", workdir / "operator.kubeconfig")
        env["KUBECONFIG"] = str(kubeconfig)
        ssl_context = ssl.create_default_context(cafile=str(real.plane.ca))
        http_args: dict[str, Any] = {
            "base_url": real.plane.server,
            "headers": {"Authorization": f"Bearer {real.plane.admin_token}"},
            "ssl": ssl_context,
        }
        tracker: Tracker | None = None
    else:
        cluster = EmulatedCluster(workdir).start()
        stack.callback(cluster.stop)
        cluster.create_namespace("bench")
        tracker = Tracker()
        cluster.emulator.watchers.append(tracker)
        env["KUBECONFIG"] = str(cluster.kubeconfig)
        http_args = {"base_url": cluster.url}
    log = (workdir / "operator.log").open("w")
    operator = subprocess.Popen([sys.executable, "-m", "korall_operator"], env=env, stdout=log, stderr=log)
    try:
        rows = asyncio.run(run(http_args, tracker, operator.pid, args.scale))
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            operator.kill()
        stack.close()
        log.close()

    width = max(len(r[0]) for r in rows)
    print(f"API server: {'real (tests/realcluster), chart RBAC' if args.real else 'kmock emulator (no controllers)'}")
    print(f"{'figure':<{width}}  {'measured':>10}  {'target':>10}  verdict")
    for figure, value, target, ok in rows:
        print(f"{figure:<{width}}  {value:>10}  {target:>10}  {'PASS' if ok else 'FAIL'}")
    print(f"(operator log: {workdir / 'operator.log'})")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
