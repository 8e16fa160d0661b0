"""Alert mails from the running operator to a real SMTP server (aiosmtpd with STARTTLS and AUTH), on the emulator
and on a real API server with the chart's RBAC (a release with mails on: see alert_helpers.py).

Timers are short so that the module stays quick: group_wait 1-4 s instead of 30 s, group_interval 3 s instead of
5 min, retries at most 1 s apart instead of 60 s, and the SMTP outage lasts about 3 s instead of the issue's 60 s
(what matters is that mails wait through it and none is lost or doubled, not how long it lasts).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from alert_helpers import (
    RECIPIENT,
    Alerting,
    Camera,
    camera,
    has_condition,
    install_release,
    metrics_port,
    model,
    remove_everything,
    scrape,
)
from cluster_helpers import API, Cluster, ClusterClient, eventually
from smtp_server import MailServer


@pytest.fixture(scope="module")
def alerting(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Alerting]:
    if cluster.emulated is not None:
        namespace, configmap = "korall-system", "korall-alerts"
        cluster.emulated.create_namespace(namespace)
        cluster.emulated.call(_create_configmap(cluster, namespace, configmap))
        yield Alerting(cluster, namespace, configmap, cluster.kubeconfig)
        return
    real = request.getfixturevalue("real_cluster").cluster
    release, namespace, configmap, kubeconfig = install_release(real, cluster.namespace, tmp_path_factory.mktemp("a"))
    try:
        yield Alerting(cluster, namespace, configmap, kubeconfig, real=real)
    finally:
        real.run("helm", "uninstall", release, "--namespace", namespace)
        real.api("DELETE", f"/api/v1/namespaces/{namespace}")


async def _create_configmap(cluster: Cluster, namespace: str, name: str) -> None:
    assert cluster.emulated is not None
    from kmock import resource

    await cluster.emulated.emulator._create(resource("", "v1", "configmaps"), namespace, {"metadata": {"name": name}})


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def prepared(alerting: Alerting, kube: ClusterClient, mail: MailServer) -> AsyncIterator[Alerting]:
    await alerting.prepare(kube, mail)
    yield alerting
    await remove_everything(kube, alerting.cluster.namespace)


def subjects(mail: MailServer) -> list[str]:
    return [str(m["Subject"]) for m in mail.messages]


async def test_a_lost_camera_mails_once_within_group_wait_and_once_when_it_is_back(
    prepared: Alerting, kube: ClusterClient, mail: MailServer
) -> None:
    ns, name = prepared.cluster.namespace, "door"
    await kube.create(API, "captureprofiles", ns, camera("door-cam"))
    await kube.create(API, "inferencemodels", ns, model(name, captureProfileRef={"name": "door-cam"}))
    cam = Camera(prepared, kube, name)
    with prepared.operator(mail, group_wait_s=2, group_interval_s=3):
        await cam.running()
        lost = time.monotonic()
        await cam.lose()
        (firing,) = await asyncio.to_thread(mail.wait_for, 1, 2 + 8, "(the camera lost)")
        assert mail.received[0].at - lost < 2 + 5, "not within group_wait (2 s) and a margin"
        assert firing["Subject"] == f"[korall test] FIRING critical: CameraUnavailable on InferenceModel {ns}/{name}"
        assert mail.received[0].recipients == [RECIPIENT]
        assert "the camera stopped streaming" in firing.get_content()
        await has_condition(kube, ns, name, "Degraded", "True", "CameraUnavailable")

        await cam.find()
        mails = await asyncio.to_thread(mail.wait_for, 2, 15, "(the camera back)")
        assert (
            mails[1]["Subject"] == f"[korall test] RESOLVED critical: CameraUnavailable on InferenceModel {ns}/{name}"
        )
        await eventually(lambda: has_condition(kube, ns, name, "Ready", "True"))

        # A second loss: one more Warning Event would flood `kubectl get events`; the same one counts up instead.
        await asyncio.sleep(1.1)
        await cam.lose()

        async def counted_twice() -> None:
            events = [e for e in await kube.events_for(ns, name) if e.get("reason") == "CameraUnavailable"]
            assert len(events) == 1 and events[0]["count"] == 2 and events[0]["type"] == "Warning", events

        await eventually(counted_twice, timeout=20)
    assert len(subjects(mail)) <= 3  # the second loss may have been mailed before the operator stopped


async def test_fifty_failures_make_one_mail(prepared: Alerting, kube: ClusterClient, mail: MailServer) -> None:
    ns = prepared.cluster.namespace
    names = [f"bad-{i:02}" for i in range(50)]
    with prepared.operator(mail, group_wait_s=5, group_interval_s=60):
        await asyncio.gather(*(kube.create(API, "inferencemodels", ns, model(n, f"{n}.tflite")) for n in names))
        (digest,) = await asyncio.to_thread(mail.wait_for, 1, 25, "(the 50 failures)")
        await asyncio.sleep(1)
    assert len(mail.messages) == 1, subjects(mail)
    assert digest["Subject"] == "[korall test] FIRING 50 warning: ModelNotInImage (50)"
    assert digest["X-Korall-Firing"] == "50"
    text = digest.get_content()
    assert text.count("kubectl -n") == 10 and "... and 40 more: ModelNotInImage (40)" in text
    assert all(f"{ns}/{n}" in text for n in names)


async def test_mails_wait_through_an_smtp_outage_and_none_is_lost_or_doubled(
    prepared: Alerting, kube: ClusterClient, mail: MailServer
) -> None:
    ns, port = prepared.cluster.namespace, metrics_port()
    mail.stop()
    with prepared.operator(mail, metrics_port=port):
        await kube.create(API, "inferencemodels", ns, model("outage", "missing.tflite"))

        async def failing() -> None:
            got = await scrape(port)
            assert got[("korall_operator_alert_mail_failing", ())] == 1
            assert got[("korall_operator_alert_mails_total", (("kind", "connect"), ("result", "failed")))] >= 2

        await eventually(failing, timeout=20)
        await asyncio.sleep(1)  # down for about 3 s in all, retried every second
        mail.start()
        (got,) = await asyncio.to_thread(mail.wait_for, 1, 10, "(after the outage)")
        assert "ModelNotInImage on InferenceModel" in got["Subject"]
        await asyncio.sleep(1)
        assert (await scrape(port))[("korall_operator_alert_mail_failing", ())] == 0
    assert len(mail.messages) == 1, subjects(mail)


async def test_a_restart_neither_mails_twice_nor_forgets(
    prepared: Alerting, kube: ClusterClient, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns, name = prepared.cluster.namespace, "restarted"
    # Fired, then the operator stops before group_wait is over: nothing sent yet.
    with prepared.operator(mail, group_wait_s=2):
        await kube.create(API, "inferencemodels", ns, model(name, "missing.tflite"))
        await eventually(lambda: has_condition(kube, ns, name, "Degraded", "True", "ModelNotInImage"))
    assert mail.messages == [] and await prepared.state(kube) == ""

    # The next operator finds it in the conditions and mails it, once; what it mailed is in the ConfigMap.
    with prepared.operator(mail, group_wait_s=2):
        await asyncio.to_thread(mail.wait_for, 1, 15, "(after the restart)")

        async def recorded() -> None:
            assert f"{ns}/InferenceModel/{name}/ModelNotInImage" in await prepared.state(kube)

        await eventually(recorded)
    state = json.loads(await prepared.state(kube))
    assert state["groups"]["warning"]["lastSentAt"] > 0

    # And the one after does not mail it again; once the model is gone (the indexes lose it, a GET confirms it:
    # the grace before that GET is shortened here), it mails the resolution, once.
    monkeypatch.setattr("korall_operator.alerting.service.ABSENT_GRACE_S", 1.0)
    with prepared.operator(mail, group_wait_s=2, group_interval_s=1):
        await asyncio.sleep(2 + 1)  # group_wait and a margin: it would have been mailed by now
        assert len(mail.messages) == 1, subjects(mail)
        await kube.delete(API, "inferencemodels", ns, name)
        mails = await asyncio.to_thread(mail.wait_for, 2, 15, "(the resolution)")
        assert mails[1]["Subject"].startswith("[korall test] RESOLVED warning: ModelNotInImage")
        await asyncio.sleep(1)
    assert len(mail.messages) == 2, subjects(mail)
    assert mail.messages[0]["Message-ID"] != mail.messages[1]["Message-ID"]


async def test_bad_smtp_settings_are_reported_and_the_operator_keeps_reconciling(
    prepared: Alerting, kube: ClusterClient, mail: MailServer
) -> None:
    ns, port = prepared.cluster.namespace, metrics_port()
    await prepared.set_secret(kube, mail, password="an-old-password")
    with prepared.operator(mail, metrics_port=port) as runner:
        await kube.create(API, "inferencemodels", ns, model("broken", "missing.tflite"))

        async def refused() -> None:
            got = await scrape(port)
            assert got[("korall_operator_alert_mail_failing", ())] == 1
            assert got[("korall_operator_alert_mails_total", (("kind", "auth"), ("result", "failed")))] >= 1

        await eventually(refused, timeout=20)

        async def event_says_so() -> None:
            events = await kube.events_for(prepared.namespace, prepared.configmap)
            (event,) = [e for e in events if e.get("reason") == "AlertMailFailed"]
            assert event["type"] == "Warning" and "refused the login" in event["message"], event

        await eventually(event_says_so, timeout=20)
        # Reconciling goes on meanwhile.
        await kube.create(API, "inferencemodels", ns, model("healthy"))
        await eventually(lambda: has_condition(kube, ns, "healthy", "Degraded", "False"), timeout=30)
        assert mail.messages == []

        # A fixed Secret is read at the next attempt: no restart needed.
        await prepared.set_secret(kube, mail)
        (got,) = await asyncio.to_thread(mail.wait_for, 1, 10, "(after the Secret was fixed)")
        assert "ModelNotInImage on InferenceModel" in got["Subject"]
    log = runner.output
    assert "alert mail not sent" in log and "refused the login of 'alerts@example.org'" in log
    assert "check the SMTP settings" in log and "an-old-password" not in log
