"""What the alert tests share: the alerting's place in the cluster (the state ConfigMap and the SMTP Secret, with
the chart's RBAC on a real API server), an operator run with short alert timers, the camera of a vision pod
(lost and found again), and the operator's /metrics.

On a real API server a second release of the chart is installed with mails on (`alerts.smtp.host`, `.secret`),
watching the module's namespace: its ConfigMap, its Role (resourceNames) and its ServiceAccount are the ones under
test, and any 403 fails the run. On the emulator the test creates the ConfigMap itself (no RBAC there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cluster_helpers import API, Cluster, ClusterClient, eventually, running_operator
from korall_operator.manifests import child_name
from mqtt_broker import free_port
from prometheus_client.parser import text_string_to_metric_families
from smtp_server import MailServer

SECRET = "korall-smtp"
RECIPIENT = "ops@example.org"
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"


@dataclass
class Alerting:
    """Where the operator under test keeps its alert state, and whose rights it runs with."""

    cluster: Cluster
    namespace: str  # the release namespace: the Secret and the ConfigMap
    configmap: str
    operator_kubeconfig: Path
    real: Any = None  # RealCluster on a real API server: its fake nodes play the kubelet

    async def prepare(self, kube: ClusterClient, mail: MailServer, password: str | None = None) -> None:
        """Before each test: the Secret with `password` (default: the right one) and an empty state."""
        await self.set_secret(kube, mail, password)
        await kube.merge_patch("v1", "configmaps", self.namespace, self.configmap, {"data": None})

    async def set_secret(self, kube: ClusterClient, mail: MailServer, password: str | None = None) -> None:
        data = {"username": mail.username, "password": password or mail.password, "ca.crt": mail.ca_pem}
        body = {
            "metadata": {"name": SECRET},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        await kube.delete("v1", "secrets", self.namespace, SECRET)
        await kube.create("v1", "secrets", self.namespace, body)

    async def state(self, kube: ClusterClient) -> str:
        got = await kube.get("v1", "configmaps", self.namespace, self.configmap)
        return str(((got or {}).get("data") or {}).get("state.json") or "")

    @contextlib.contextmanager
    def operator(self, mail: MailServer, metrics_port: int = 0, **timers: float) -> Iterator[Any]:
        """The operator with mails to `mail` and short timers (seconds; the chart's defaults are 30 s, 5 min, 4 h)."""
        settings = {"group_wait_s": 1.0, "group_interval_s": 3.0, "repeat_interval_s": 3600.0, "retry_max_s": 1.0}
        settings |= timers
        env = {
            "KORALL_ALERTS_SMTP_HOST": "localhost",
            "KORALL_ALERTS_SMTP_PORT": str(mail.port),
            "KORALL_ALERTS_SMTP_SECURITY": mail.security,
            "KORALL_ALERTS_SMTP_SECRET": SECRET,
            "KORALL_ALERTS_SMTP_TIMEOUT_S": "5",
            "KORALL_ALERTS_NAMESPACE": self.namespace,
            "KORALL_ALERTS_STATE_CONFIGMAP": self.configmap,
            "KORALL_ALERTS_TO": f'["{RECIPIENT}"]',
            "KORALL_ALERTS_CLUSTER_NAME": "test",
            "KORALL_METRICS_PORT": str(metrics_port),
            **{f"KORALL_ALERTS_{k.upper()}": str(v) for k, v in settings.items()},
        }
        with running_operator(self.cluster.namespace, self.operator_kubeconfig, env=env) as runner:
            yield runner


def install_release(real: Any, watch: str, workdir: Path) -> tuple[str, str, str, Path]:
    """A release of the chart with mails on, watching `watch`: (release, its namespace, ConfigMap, kubeconfig)."""
    release = f"korall-alerts-{secrets.token_hex(2)}"
    namespace = release
    account = real.install_chart(
        release, namespace, f"watchNamespace={watch}", "alerts.smtp.host=localhost", f"alerts.smtp.secret={SECRET}"
    )
    kubeconfig = real.service_account_kubeconfig(namespace, account, workdir / f"{release}.kubeconfig")
    return release, namespace, f"{release}-alerts", kubeconfig


# ------------------------------------------------------------------------------------------------ resources


def model(name: str, file: str = CPU_MODEL, **spec: Any) -> dict[str, Any]:
    body = {"model": {"file": file}, **spec}
    return {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name}, "spec": body}


def camera(name: str) -> dict[str, Any]:
    spec = {"type": "video", "device": "/dev/video0", "video": {"width": 640, "height": 480, "fps": 15}}
    return {"apiVersion": API, "kind": "CaptureProfile", "metadata": {"name": name}, "spec": spec}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    raise AssertionError(f"no {type_} condition yet: {(obj or {}).get('status')}")


async def has_condition(kube: ClusterClient, ns: str, name: str, type_: str, status: str, reason: str = "") -> None:
    got = condition(await kube.get(API, "inferencemodels", ns, name), type_)
    assert got["status"] == status and (not reason or got["reason"] == reason), got


async def remove_everything(kube: ClusterClient, ns: str) -> None:
    """What a test made goes, so that the next test's operator finds nothing firing."""
    for plural in ("inferencemodels", "captureprofiles"):
        for obj in await kube.list(API, plural, ns):
            await kube.delete(API, plural, ns, obj["metadata"]["name"])

    async def gone() -> None:
        assert not await kube.list(API, "inferencemodels", ns) and not await kube.list(API, "captureprofiles", ns)

    await eventually(gone, timeout=30)


# ------------------------------------------------------------------------------------------------ the camera


class Camera:
    """The camera of InferenceModel `name`'s pod: lost and found again. On a real API server the fake kubelet
    fails the pod's readiness probe (fake_nodes.NOT_READY); on the emulator, which runs no controllers, the test
    plays the Deployment controller and the kubelet: it writes the Deployment's status and the pod."""

    def __init__(self, alerting: Alerting, kube: ClusterClient, name: str) -> None:
        self.alerting, self.kube, self.name, self.ns = alerting, kube, name, alerting.cluster.namespace
        self._rule: Any = None
        self._pod = f"{child_name(name, 'vision')}-0"

    async def running(self) -> None:
        """The model's pod runs and is ready (what a real cluster does by itself)."""
        if self.alerting.real is None:
            deployment = await self._deployment()
            generation = deployment["metadata"]["generation"]
            status = {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
            await self.kube.merge_patch_status(
                "apps/v1", "deployments", self.ns, deployment["metadata"]["name"], status
            )
            template = deployment["spec"]["template"]
            pod = {"metadata": {"name": self._pod, "labels": template["metadata"]["labels"]}, "spec": template["spec"]}
            await self.kube.create("v1", "pods", self.ns, pod)
            await self._pod_status(ready=True)
        await eventually(lambda: has_condition(self.kube, self.ns, self.name, "Ready", "True"), timeout=30)
        await asyncio.sleep(1.1)  # API times are whole seconds: the loss must come a second after the start

    async def lose(self) -> None:
        if self.alerting.real is None:
            await self._pod_status(ready=False)
        else:
            from fake_nodes import NOT_READY

            self._rule = self.alerting.real.nodes.fail(f"^{self.ns}/{child_name(self.name, 'vision')}-", NOT_READY)

    async def find(self) -> None:
        if self.alerting.real is None:
            await self._pod_status(ready=True)
        else:
            self.alerting.real.nodes.clear(self._rule)

    async def _deployment(self) -> dict[str, Any]:
        async def applied() -> dict[str, Any]:
            got = await self.kube.get("apps/v1", "deployments", self.ns, child_name(self.name, "vision"))
            assert got is not None
            return got

        return await eventually(applied, timeout=30)

    async def _pod_status(self, *, ready: bool) -> None:
        """As the kubelet writes it: the container runs since its start; Ready flips now."""
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = await self.kube.get("v1", "pods", self.ns, self._pod)
        assert pod is not None
        started = (pod.get("status") or {}).get("startTime") or now
        container = {"name": "vision", "ready": ready, "started": True, "restartCount": 0,
                     "state": {"running": {"startedAt": started}}}  # fmt: skip
        status = {
            "phase": "Running",
            "startTime": started,
            "conditions": [{"type": "Ready", "status": str(ready), "lastTransitionTime": now}],
            "containerStatuses": [container],
        }
        await self.kube.merge_patch_status("v1", "pods", self.ns, self._pod, status)


# ------------------------------------------------------------------------------------------------ metrics


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The operator's /metrics as {(sample name, sorted labels): value}; an AssertionError until it answers."""
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    except aiohttp.ClientConnectionError as e:
        raise AssertionError(f"/metrics not served yet: {e}") from e
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metrics_port() -> int:
    return free_port()
