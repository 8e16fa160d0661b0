"""Models from S3, end to end through the operator: a real S3 API (moto's server), boto3 signing in the operator, the
link Secret it writes, the real downloader fetching through that link, and the status.

Run on the emulator and on the real API server (with the chart's RBAC: the operator may read Secrets in its own
namespace only, and write the link Secrets). The S3 store is moto's server on loopback; it serves presigned GETs as
S3 does but does not check their expiry (tests/workloads/fetch covers expired links with a front that does).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from cluster_helpers import API, Cluster, ClusterClient, cond, eventually, has_event, running_operator
from korall_contract import VisionEnv
from korall_operator.manifests import LINK_KEY, child_name, link_secret_name
from s3_servers import ExpiringLinkFront, moto_s3

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
SHA = hashlib.sha256(MODEL.read_bytes()).hexdigest()
BUCKET, KEY = "models", "ssd/v2.tflite"
CREDENTIALS_NAMESPACE = "korall-system"  # the chart's release namespace: its Role lets the operator read Secrets

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3() as endpoint:
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=MODEL.read_bytes())
        yield endpoint


@pytest.fixture(scope="module")
def credentials(cluster: Cluster) -> str:
    """A credentials Secret in the operator's namespace (moto accepts any key)."""
    if cluster.emulated is not None:
        cluster.emulated.create_namespace(CREDENTIALS_NAMESPACE)
    name = f"s3-{secrets.token_hex(3)}"
    data = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}
    body = {"metadata": {"name": name}, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    async def create() -> None:
        kube = await ClusterClient.from_kubeconfig(cluster.kubeconfig)
        try:
            await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, body)
        finally:
            await kube.close()

    asyncio.run(create())
    return name


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: str, credentials: str) -> Iterator[Any]:
    env = {
        "KORALL_NAMESPACE": CREDENTIALS_NAMESPACE,
        "KORALL_S3_CREDENTIALS_SECRET": credentials,
        "KORALL_S3_ENDPOINT_URL": s3,
        "KORALL_S3_PATH_STYLE": "true",
        "KORALL_LINK_TTL_S": "10",  # signed again every 5 s
        "KORALL_LINK_RETRY_S": "1",
    }
    with running_operator(cluster.namespace, cluster.operator_kubeconfig or cluster.kubeconfig, env=env) as runner:
        yield runner


@pytest.fixture
def signings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float]]:
    """Every link the operator signs during the test, as (model, s3 URI, when): the real LinkIssuer.issue, watched
    (the operator runs in this process). A link reused costs no signing, so it is not here."""
    from korall_operator.presign import LinkIssuer

    seen: list[tuple[str, str, float]] = []
    issue = LinkIssuer.issue

    def watched(self: LinkIssuer, model: str, s3_uri: str, credentials: Any) -> Any:
        link = issue(self, model, s3_uri, credentials)
        seen.append((model, s3_uri, time.time()))
        return link

    monkeypatch.setattr(LinkIssuer, "issue", watched)
    return seen


async def reconciled(kube: ClusterClient, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The model once the operator has reconciled this change of its spec (status.observedGeneration)."""
    generation = (await kube.merge_patch(API, "inferencemodels", ns, name, {"spec": spec}))["metadata"]["generation"]

    async def seen() -> dict[str, Any]:
        im = await kube.get(API, "inferencemodels", ns, name)
        assert im is not None and (im.get("status") or {}).get("observedGeneration") == generation, im
        return im

    return await eventually(seen, timeout=30)


def s3_model(name: str, **model: Any) -> dict[str, Any]:
    source = {"s3": f"s3://{BUCKET}/{KEY}", "sha256": SHA, **model}
    return {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name}, "spec": {"model": source}}


async def link_of(kube: ClusterClient, ns: str, name: str) -> str:
    secret = await kube.get("v1", "secrets", ns, link_secret_name(name))
    assert secret is not None, "no link Secret yet"
    return base64.b64decode(secret["data"][LINK_KEY]).decode()


async def degraded(kube: ClusterClient, ns: str, name: str, reason: str) -> dict[str, Any]:
    im = await kube.get(API, "inferencemodels", ns, name)
    assert im is not None and cond(im, "Degraded")["reason"] == reason, (im or {}).get("status")
    return im


async def test_an_s3_model_gets_a_link_the_downloader_fetches_it_through_and_a_pod_that_uses_it(
    cluster: Cluster, kube: ClusterClient, tmp_path: Path
) -> None:
    ns, name = cluster.namespace, f"s3-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", ns, s3_model(name))
    link = await eventually(lambda: link_of(kube, ns, name), timeout=30)
    assert "X-Amz-Signature=" in link and "X-Amz-Expires=10" in link  # SigV4, short-lived
    assert (await asyncio.to_thread(httpx.get, link)).content == MODEL.read_bytes()

    # The init container's own code, through the operator's link: into a content-addressed cache, verified.
    (tmp_path / "link").write_text(link)
    env = {
        **os.environ,
        "MODEL_SHA256": SHA,
        "MODEL_URL_FILE": str(tmp_path / "link"),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "TERMINATION_MESSAGE_PATH": str(tmp_path / "termination"),
    }
    command = [sys.executable, "-m", "korall_workloads.fetch"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cache" / "sha256" / SHA).read_bytes() == MODEL.read_bytes()

    deployment = await kube.get("apps/v1", "deployments", ns, child_name(name, "vision"))
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-fetch", "model-hold"]  # the download, the hold
    assert {"name": "model-link", "secret": {"secretName": link_secret_name(name), "defaultMode": 0o440}} in [
        {k: v for k, v in volume.items() if k in ("name", "secret")} for volume in pod["volumes"]
    ]
    im = await kube.get(API, "inferencemodels", ns, name)
    assert im is not None and im["status"]["modelLink"]["expiresAt"] > im["status"]["modelLink"]["issuedAt"]
    if not cluster.is_emulated:  # real pods (fake nodes) become ready: the status says which model serves

        async def serving() -> None:
            got = await kube.get(API, "inferencemodels", ns, name)
            assert got is not None and (got.get("status") or {}).get("activeShortSha") == SHA[:12], got

        await eventually(serving, timeout=30)


async def test_the_link_is_signed_again_before_it_expires(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, f"resign-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", ns, s3_model(name))
    first = await eventually(lambda: link_of(kube, ns, name), timeout=30)
    deployment = await eventually(lambda: _deployment(kube, ns, name))

    async def signed_again() -> str:
        link = await link_of(kube, ns, name)
        assert link != first
        return link

    second = await eventually(signed_again, timeout=20)  # a 10 s link is signed again after 5 s
    assert (await asyncio.to_thread(httpx.get, second)).content == MODEL.read_bytes()
    again = await _deployment(kube, ns, name)
    assert again["metadata"]["generation"] == deployment["metadata"]["generation"], "a new link must not roll out"


async def test_a_link_that_cannot_be_signed_again_is_a_warning_and_is_retried(
    cluster: Cluster, kube: ClusterClient
) -> None:
    """The model's credentials Secret goes away after its first link: the renewal fails with a Warning Event
    (LinkNotRenewed) naming why, keeps trying, and signs again once the Secret is back; the pod is left alone."""
    ns, name, secret = cluster.namespace, f"renewfail-{secrets.token_hex(2)}", f"brief-{secrets.token_hex(2)}"
    data = {"AWS_ACCESS_KEY_ID": "brief-key", "AWS_SECRET_ACCESS_KEY": "brief-secret"}
    body = {"metadata": {"name": secret}, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, body)
    await kube.create(API, "inferencemodels", ns, s3_model(name, s3Credentials=secret))
    first = await eventually(lambda: link_of(kube, ns, name), timeout=30)
    await kube.delete("v1", "secrets", CREDENTIALS_NAMESPACE, secret)

    warning = await eventually(lambda: has_event(kube, ns, name, "LinkNotRenewed", "Warning"), timeout=30)
    assert f"{CREDENTIALS_NAMESPACE}/{secret} does not exist" in warning["message"]
    assert await link_of(kube, ns, name) == first

    await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, body)

    async def signed_again() -> None:
        assert await link_of(kube, ns, name) != first

    await eventually(signed_again, timeout=30)


async def test_a_model_moved_out_of_s3_loses_its_link(cluster: Cluster, kube: ClusterClient) -> None:
    """From s3 to a file in the image: the status no longer shows a link (nor does the renewal task keep reading
    the model to find it has none), and the Deployment serves the file."""
    ns, name = cluster.namespace, f"leaves3-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", ns, s3_model(name))
    await eventually(lambda: link_of(kube, ns, name), timeout=30)
    await kube.merge_patch(
        API, "inferencemodels", ns, name, {"spec": {"model": {"s3": None, "sha256": None, "file": MODEL.name}}}
    )

    async def serves_the_file() -> None:
        im = await kube.get(API, "inferencemodels", ns, name)
        assert im is not None and not (im.get("status") or {}).get("modelLink"), (im or {}).get("status")
        env = {e["name"]: e.get("value") for e in (await _deployment(kube, ns, name))["spec"]["template"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
        assert (env.get("MODEL_PATH") or "").endswith(MODEL.name), env

    await eventually(serves_the_file, timeout=30)


async def test_a_missing_credentials_secret_is_reported_and_recovers_once_it_exists(
    cluster: Cluster, kube: ClusterClient
) -> None:
    ns, name, secret = cluster.namespace, f"nocreds-{secrets.token_hex(2)}", f"late-{secrets.token_hex(2)}"
    await kube.create(API, "inferencemodels", ns, s3_model(name, s3Credentials=secret))
    im = await eventually(lambda: degraded(kube, ns, name, "S3CredentialsMissing"), timeout=30)
    assert f"{CREDENTIALS_NAMESPACE}/{secret}" in cond(im, "Degraded")["message"]
    assert await kube.get("apps/v1", "deployments", ns, child_name(name, "vision")) is None  # no pod without a link
    data = {"AWS_ACCESS_KEY_ID": "late-key", "AWS_SECRET_ACCESS_KEY": "late-secret"}
    body = {"metadata": {"name": secret}, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, body)
    await eventually(lambda: link_of(kube, ns, name), timeout=30)
    await eventually(lambda: _deployment(kube, ns, name), timeout=30)


@pytest.mark.parametrize(
    ("bad", "says"),
    [({"AWS_ENDPOINT_URL": "not a url"}, "AWS_ENDPOINT_URL is not an http(s) URL"), ({"AWS_REGION": "Bad Region!"},
     "Provided region_name 'Bad Region!'")],
    ids=["endpoint", "region"],
)  # fmt: skip
async def test_a_credentials_secret_with_bad_content_is_invalid_and_recovers_once_fixed(
    cluster: Cluster, kube: ClusterClient, bad: dict[str, str], says: str
) -> None:
    """Neither a Secret that exists (S3CredentialsMissing) nor a store that cannot be reached (S3Unreachable): the
    operator does not watch Secrets, so it tries again every KORALL_LINK_RETRY_S (1 s here) and recovers once the
    Secret is fixed, warning once meanwhile (not on every round)."""
    import asyncio

    ns, name, secret = cluster.namespace, f"badcreds-{secrets.token_hex(2)}", f"bad-{secrets.token_hex(2)}"
    data = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", **bad}
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, {"metadata": {"name": secret}, "data": encoded})
    await kube.create(API, "inferencemodels", ns, s3_model(name, s3Credentials=secret))
    im = await eventually(lambda: degraded(kube, ns, name, "S3CredentialsInvalid"), timeout=30)
    message = cond(im, "Degraded")["message"]
    assert says in message and "Secret Secret" not in message, message
    if "AWS_ENDPOINT_URL" in bad:
        assert message.startswith(f"Secret {CREDENTIALS_NAMESPACE}/{secret}: "), message
    await asyncio.sleep(4)  # four retries
    assert cond(await degraded(kube, ns, name, "S3CredentialsInvalid"), "Degraded")["message"] == message
    events = await kube.events_for(ns, name)
    warned = [e for e in events if e["reason"] == "S3CredentialsInvalid"]
    assert [(e["type"], e.get("count")) for e in warned] == [("Warning", 1)], warned
    # kopf's own Event per retry ("Handler ... failed temporarily", type Error) is not posted beside it.
    assert not [e for e in events if "failed temporarily" in e.get("message", "")], events

    fixed = {k: None for k in bad}  # the override goes: the operator's own (good) settings apply
    await kube.merge_patch("v1", "secrets", CREDENTIALS_NAMESPACE, secret, {"data": fixed})
    await eventually(lambda: link_of(kube, ns, name), timeout=30)
    await eventually(lambda: _deployment(kube, ns, name), timeout=30)


async def test_a_missing_object_is_reported_before_any_pod_is_made(cluster: Cluster, kube: ClusterClient) -> None:
    ns, name = cluster.namespace, f"noobj-{secrets.token_hex(2)}"
    body = s3_model(name)
    body["spec"]["model"]["s3"] = f"s3://{BUCKET}/no/such.tflite"
    await kube.create(API, "inferencemodels", ns, body)
    im = await eventually(lambda: degraded(kube, ns, name, "ModelObjectNotFound"), timeout=30)
    assert "no/such.tflite" in cond(im, "Degraded")["message"]
    assert await kube.get("apps/v1", "deployments", ns, child_name(name, "vision")) is None


async def test_a_failed_download_on_the_node_surfaces_as_its_reason(
    cluster: Cluster, kube: ClusterClient, request: pytest.FixtureRequest
) -> None:
    """The init container's one-line termination message becomes the condition (the fake kubelet reports it)."""
    if cluster.is_emulated:
        pytest.skip("needs the real tier: its fake nodes play the failing init container")
    from fake_nodes import INIT_FAILED

    real = request.getfixturevalue("real_cluster")
    ns, name = cluster.namespace, f"badsum-{secrets.token_hex(2)}"
    message = f"ModelDownloadFailed: ChecksumMismatch: got sha256 {'0' * 64}, expected {SHA}"
    rule = real.cluster.nodes.fail(f"^{ns}/{name}-", INIT_FAILED, message)
    try:
        await kube.create(API, "inferencemodels", ns, s3_model(name))
        im = await eventually(lambda: degraded(kube, ns, name, "ModelDownloadFailed"), timeout=60)
        assert "ChecksumMismatch" in cond(im, "Degraded")["message"]
        assert im["status"]["lastFailure"]["reason"] == "ModelDownloadFailed"
    finally:
        real.cluster.nodes.clear(rule)


async def _deployment(kube: ClusterClient, ns: str, name: str) -> dict[str, Any]:
    got = await kube.get("apps/v1", "deployments", ns, child_name(name, "vision"))
    assert got is not None
    return got


async def test_a_renewal_cannot_put_back_the_link_of_the_object_the_spec_left(
    cluster: Cluster, kube: ClusterClient, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal that read the model before its spec moved to another S3 object must not write its link over the
    one the reconcile signed for the new object: the pods that roll out would fetch the old object.

    To make the race certain, the renewal task's signing of this model is held (the operator runs in this process:
    the renewal's own call is patched, the reconcile's is not) while the spec moves; later renewals are skipped,
    so what the link says at the end is what these two wrote, in the order they wrote it."""
    import threading

    from korall_operator.handlers import model_links

    ns, name, other = cluster.namespace, f"moves-{secrets.token_hex(2)}", "ssd/v2-moved.tflite"
    boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").put_object(Bucket=BUCKET, Key=other, Body=MODEL.read_bytes())  # fmt: skip
    held, release, renewals = threading.Event(), threading.Event(), []
    sign = model_links.ensure_link

    async def held_renewal(korall: Any, body: Any, model: Any, **how: bool) -> dict[str, Any]:
        if body["metadata"]["name"] != name:
            return await sign(korall, body, model, **how)
        renewals.append(model.model.s3)
        if len(renewals) > 1:
            return {"modelLink": None}  # skipped: the renewal round takes it for a model that left S3
        held.set()
        await asyncio.to_thread(release.wait, 30)
        return await sign(korall, body, model, **how)

    await kube.create(API, "inferencemodels", ns, s3_model(name))
    await eventually(lambda: link_of(kube, ns, name), timeout=30)
    monkeypatch.setattr(model_links, "ensure_link", held_renewal)
    assert await asyncio.to_thread(held.wait, 30), "the renewal never came"
    moved = {"spec": {"model": {"s3": f"s3://{BUCKET}/{other}"}}}
    await kube.merge_patch(API, "inferencemodels", ns, name, moved)
    await asyncio.sleep(2)  # the reconcile of the move has run, or waits for the renewal
    release.set()

    async def links_the_new_object() -> None:
        assert f"/{BUCKET}/{other}?" in await link_of(kube, ns, name)
        im = await kube.get(API, "inferencemodels", ns, name)
        assert im is not None and im["status"]["observedGeneration"] == im["metadata"]["generation"]

    await eventually(links_the_new_object, timeout=30)
    await asyncio.sleep(2)  # whatever the held renewal was still to write has been written
    assert renewals[0] == f"s3://{BUCKET}/{KEY}"
    assert f"/{BUCKET}/{other}?" in await link_of(kube, ns, name), "the renewal put the old object's link back"


async def test_a_reconcile_reuses_a_fresh_link_and_signs_anew_once_half_its_lifetime_is_gone(
    cluster: Cluster, kube: ClusterClient, signings: list[tuple[str, str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only reconciles sign this model's link here: the renewal task's call is patched away for it (as in the test
    above; the reconcile's own call is not patched). A reconcile within half the link's lifetime (5 s of 10) writes
    the link signed first; one after that signs a new one, by the rule the renewal task signs by."""
    from korall_operator.handlers import model_links

    ns, name = cluster.namespace, f"reuse-{secrets.token_hex(2)}"
    renew = model_links.ensure_link

    async def no_renewal(korall: Any, body: Any, model: Any, **how: bool) -> dict[str, Any]:
        if body["metadata"]["name"] == name:
            return {"modelLink": None}  # skipped: the renewal round takes it for a model that left S3
        return await renew(korall, body, model, **how)

    monkeypatch.setattr(model_links, "ensure_link", no_renewal)
    body = s3_model(name)
    body["spec"]["replicas"] = 0  # no pods: only the link matters
    await kube.create(API, "inferencemodels", ns, body)
    first = await eventually(lambda: link_of(kube, ns, name), timeout=30)
    first_expiry = (await reconciled(kube, ns, name, {}))["status"]["modelLink"]["expiresAt"]  # no change: its status
    ours = [s for s in signings if s[0] == f"{ns}/{name}"]
    assert len(ours) == 1, ours
    await reconciled(kube, ns, name, {"scoreThreshold": 0.41})
    # Reconciled within half the lifetime, it must reuse. On a machine so loaded that the reconcile came later,
    # it signed anew (by the same rule), and the rest of the test goes on from that link.
    reused = time.time() < ours[0][2] + 5.0
    if reused:
        assert await link_of(kube, ns, name) == first
        assert [s for s in signings if s[0] == f"{ns}/{name}"] == ours, "a fresh link was signed again"
    ours = [s for s in signings if s[0] == f"{ns}/{name}"]
    first = await link_of(kube, ns, name)

    await asyncio.sleep(max(0.0, ours[-1][2] + 5.5 - time.time()))  # past half the link's lifetime
    im = await reconciled(kube, ns, name, {"scoreThreshold": 0.42})
    again = [s for s in signings if s[0] == f"{ns}/{name}"]
    assert len(again) == len(ours) + 1, again
    assert await link_of(kube, ns, name) != first
    assert im["status"]["modelLink"]["expiresAt"] > first_expiry, "the status still shows the first link"


async def test_a_store_that_does_not_answer_for_a_while_blocks_no_edit_of_a_model_with_a_fresh_link(
    cluster: Cluster, kube: ClusterClient, s3: str
) -> None:
    """The model's credentials Secret points at a front of the store that then answers 503 to everything (S3's
    ServiceUnavailable). An edit of the threshold rolls out on the fresh link, instead of waiting (Degraded
    S3Unreachable) for the store; a new model, which has no link yet, still says the store is unreachable."""
    ns, name, secret = cluster.namespace, f"blip-{secrets.token_hex(2)}", f"front-{secrets.token_hex(2)}"
    with ExpiringLinkFront(s3) as front:
        data = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": front.endpoint}
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, {"metadata": {"name": secret}, "data": encoded})
        body = s3_model(name, s3Credentials=secret)
        body["spec"]["replicas"] = 0  # no pods: the Deployment's template is what matters
        await kube.create(API, "inferencemodels", ns, body)
        await eventually(lambda: link_of(kube, ns, name), timeout=30)
        front.down = True
        im = await reconciled(kube, ns, name, {"scoreThreshold": 0.41})
        assert cond(im, "Degraded")["status"] == "False", im["status"]

        async def rolled_out() -> None:
            container = (await _deployment(kube, ns, name))["spec"]["template"]["spec"]["containers"][0]
            assert {e["name"]: e.get("value") for e in container["env"]}[VisionEnv.SCORE_TH] == "0.41"

        await eventually(rolled_out, timeout=30)
        newcomer = f"{name}-new"
        await kube.create(API, "inferencemodels", ns, s3_model(newcomer, s3Credentials=secret))
        im = await eventually(lambda: degraded(kube, ns, newcomer, "S3Unreachable"), timeout=30)
        assert cond(im, "Degraded")["message"].endswith(": 503"), cond(im, "Degraded")  # a HEAD's answer has no body
