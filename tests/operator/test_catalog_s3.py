"""Production models from S3: the validation Job gets a link of its own, and the serving model keeps its link; and
a model's link is reused by its reconciles while it is fresh (these links live 600 s, the default).

The S3 store is moto's server, the operator signs with boto3 (the fixtures of test_model_delivery.py). The Job's
link, from the Secret the operator writes for it (owned by the Job), is followed by the real downloader
(korall_workloads.fetch) into a content-addressed cache, and the real validator judges what it fetched: the result
the Job's pod then reports (catalog_helpers.end_validation). Meanwhile the model that serves keeps the link of its
own object. On the emulator and on the real control plane.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from catalog_helpers import (
    ADMIN,
    CPU_MODEL,
    CPU_SHA,
    MODELS,
    approve,
    broken_model,
    cond,
    end_validation,
    events_of,
    get_im,
    promoted,
    running_validation,
    serving,
    validator_result,
)
from catalog_helpers import name as new_name
from cluster_helpers import API, Cluster, ClusterClient, eventually, running_operator
from korall_operator.manifests import (
    LINK_CREDENTIALS_ANNOTATION,
    LINK_EXPIRES_ANNOTATION,
    LINK_KEY,
    LINK_OBJECT_ANNOTATION,
    link_secret_name,
)
from korall_operator.manifests.validation import validation_link_secret
from test_catalog import approver, nodes  # noqa: F401  (fixtures)
from test_model_delivery import (  # noqa: F401  (fixtures)
    BUCKET,
    CREDENTIALS_NAMESPACE,
    KEY,
    SHA,
    credentials,
    link_of,
    reconciled,
    s3,
    signings,
)

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: str, credentials: str) -> Iterator[Any]:  # noqa: F811
    """The operator with the store's endpoint and credentials, links of the default lifetime."""
    env = {"KORALL_NAMESPACE": CREDENTIALS_NAMESPACE, "KORALL_S3_CREDENTIALS_SECRET": credentials,
           "KORALL_S3_ENDPOINT_URL": s3, "KORALL_S3_PATH_STYLE": "true"}  # fmt: skip
    with running_operator(cluster.namespace, cluster.operator_kubeconfig or cluster.kubeconfig, env=env) as runner:
        yield runner


async def secret_link(kube: ClusterClient, ns: str, secret: str) -> str:
    got = await kube.get("v1", "secrets", ns, secret)
    assert got is not None, f"no Secret {secret} yet"
    return base64.b64decode(got["data"][LINK_KEY]).decode()


async def fetched(link: str, sha: str, folder: Path) -> Path:
    """The model downloader (the Job's init container) through a link, into a cache; the cached file."""
    (folder / "link").write_text(link)
    env = {**os.environ, "MODEL_SHA256": sha, "MODEL_URL_FILE": str(folder / "link"), "MODEL_CACHE_DIR":
           str(folder / "cache"), "TERMINATION_MESSAGE_PATH": str(folder / "termination")}  # fmt: skip
    command = [sys.executable, "-m", "korall_workloads.fetch"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder / "cache" / "sha256" / sha


async def test_an_s3_model_is_validated_through_its_own_link_while_the_serving_one_keeps_its_own(
    cluster: Cluster,
    kube: ClusterClient,
    s3: str,  # noqa: F811
    nodes: Any,  # noqa: F811
    approver: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    ns, im = cluster.namespace, new_name("s3prod")
    body = {"apiVersion": API, "kind": "InferenceModel",
            "metadata": {"name": im, "annotations": {"korall.io/requested-by": ADMIN}},
            "spec": {"stage": "production", "model": {"s3": f"s3://{BUCKET}/{KEY}", "sha256": CPU_SHA}}}  # fmt: skip
    await kube.create(API, "inferencemodels", ns, body)
    job = await eventually(lambda: running_validation(kube, ns, im, CPU_SHA), timeout=30)
    link = await eventually(lambda: secret_link(kube, ns, validation_link_secret(job)), timeout=30)
    secret = await kube.get("v1", "secrets", ns, validation_link_secret(job))
    assert secret is not None and secret["metadata"]["ownerReferences"][0]["kind"] == "Job"  # gone with the Job
    assert await kube.get("v1", "secrets", ns, link_secret_name(im)) is None  # nothing serves: no serving link yet
    first = tmp_path / "first"
    first.mkdir()
    model = await fetched(link, CPU_SHA, first)
    await end_validation(cluster, nodes, kube, ns, job, validator_result(model, CPU_SHA))
    await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
    await approve(cluster, im, CPU_SHA, approver, ns)
    await serving(cluster, kube, ns, im, CPU_SHA)
    serving_link = await secret_link(kube, ns, link_secret_name(im))
    assert f"/{KEY}?" in serving_link

    # A new object in production: its Job fetches it through a link of its own; the serving link stays the old one.
    broken, broken_sha = broken_model(tmp_path)
    client = boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    await asyncio.to_thread(client.put_object, Bucket=BUCKET, Key="ssd/broken.tflite", Body=broken.read_bytes())
    change = {"spec": {"model": {"s3": f"s3://{BUCKET}/ssd/broken.tflite", "sha256": broken_sha}}}
    await kube.merge_patch(API, "inferencemodels", ns, im, change)
    job = await eventually(lambda: running_validation(kube, ns, im, broken_sha), timeout=30)
    link = await eventually(lambda: secret_link(kube, ns, validation_link_secret(job)), timeout=30)
    assert "/ssd/broken.tflite?" in link
    assert (await asyncio.to_thread(httpx.get, link)).content == broken.read_bytes()
    assert f"/{KEY}?" in await secret_link(kube, ns, link_secret_name(im))  # still the serving model's object
    second = tmp_path / "second"
    second.mkdir()
    await end_validation(cluster, nodes, kube, ns, job, validator_result(await fetched(link, broken_sha, second),
                                                                         broken_sha))  # fmt: skip
    await eventually(lambda: promoted(kube, ns, im, "ValidationFailed"), timeout=30)
    refused = await get_im(kube, ns, im)
    assert refused["status"]["activeModelSha256"] == CPU_SHA
    assert f"/{KEY}?" in await secret_link(kube, ns, link_secret_name(im))


@dataclass(frozen=True)
class TwoModels:
    client: Any  # boto3's S3 client of the store
    old_key: str
    new_key: str
    new: Path  # the second model's file
    new_sha: str
    job: str  # the second model's running validation


async def _second_model_validating(
    cluster: Cluster, kube: ClusterClient, store: str, fake_nodes: Any, approved_by: str, tmp_path: Path, im: str
) -> TwoModels:
    """A production model from S3, validated, approved and serving; then its spec moved to a second object (the
    same network, another file: another sha256), whose validation is running."""
    ns = cluster.namespace
    old_key, new_key = f"ssd/{im}-old.tflite", f"ssd/{im}-new.tflite"
    new = tmp_path / "new.tflite"
    new.write_bytes((MODELS / CPU_MODEL).read_bytes() + b"\0" * 16)
    new_sha = hashlib.sha256(new.read_bytes()).hexdigest()
    client = boto3.client(
        "s3", endpoint_url=store, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    await asyncio.to_thread(client.put_object, Bucket=BUCKET, Key=old_key, Body=(MODELS / CPU_MODEL).read_bytes())
    await asyncio.to_thread(client.put_object, Bucket=BUCKET, Key=new_key, Body=new.read_bytes())
    spec = {"stage": "production", "model": {"s3": f"s3://{BUCKET}/{old_key}", "sha256": CPU_SHA}}
    body = {"apiVersion": API, "kind": "InferenceModel",
            "metadata": {"name": im, "annotations": {"korall.io/requested-by": ADMIN}}, "spec": spec}  # fmt: skip
    await kube.create(API, "inferencemodels", ns, body)
    job = await eventually(lambda: running_validation(kube, ns, im, CPU_SHA), timeout=30)
    await end_validation(cluster, fake_nodes, kube, ns, job, validator_result(MODELS / CPU_MODEL, CPU_SHA))
    await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
    await approve(cluster, im, CPU_SHA, approved_by, ns)
    await serving(cluster, kube, ns, im, CPU_SHA)
    change = {"spec": {"model": {"s3": f"s3://{BUCKET}/{new_key}", "sha256": new_sha}}}
    await kube.merge_patch(API, "inferencemodels", ns, im, change)
    job = await eventually(lambda: running_validation(kube, ns, im, new_sha), timeout=30)
    return TwoModels(client, old_key, new_key, new, new_sha, job)


async def test_a_serving_object_gone_from_s3_is_not_warned_of_every_round_and_the_next_admitted_model_clears_it(
    cluster: Cluster,
    kube: ClusterClient,
    s3: str,  # noqa: F811
    nodes: Any,  # noqa: F811
    approver: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The serving model's object is deleted while a new model waits for its validation. The reconcile that the
    validation's end brings fails on the old object (ModelObjectNotFound, `during: rollout`): reported with what
    the catalog decided written (the new model now waits for approval), so the resync loop does not ask the
    catalog again, and warn again, every round. The approval then admits the new model, whose rollout clears the
    failure."""
    ns, im = cluster.namespace, new_name("s3gone")
    two = await _second_model_validating(cluster, kube, s3, nodes, approver, tmp_path, im)
    client, old_key, new, new_sha, job = two.client, two.old_key, two.new, two.new_sha, two.job
    await asyncio.to_thread(client.delete_object, Bucket=BUCKET, Key=old_key)
    await end_validation(cluster, nodes, kube, ns, job, validator_result(new, new_sha))

    async def failed_waiting_for_approval() -> dict[str, Any]:
        got = await get_im(kube, ns, im)
        degraded = cond(got, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "ModelObjectNotFound"), got["status"]
        assert got["status"]["lastFailure"]["during"] == "rollout"
        assert got["status"]["catalog"]["promotion"]["reason"] == "PendingApproval", got["status"]["catalog"]
        assert cond(got, "Promoted")["reason"] == "PendingApproval"  # kubectl's PROMOTED column says it too
        return got

    await eventually(failed_waiting_for_approval, timeout=30)
    # A poke sent before that write (the resync loop saw the validation end too) may still bring one more
    # reconcile and Warning; after that, the count must stand still.
    await asyncio.sleep(3)
    before = (await events_of(kube, ns, im))["ModelObjectNotFound"]["count"]
    await asyncio.sleep(8)  # four rounds of the resync loop (every 2 s)
    warned = (await events_of(kube, ns, im))["ModelObjectNotFound"]["count"]
    assert warned == before <= 2, f"warned {warned} times for one failure ({before} before four resync rounds)"

    await approve(cluster, im, new_sha, approver, ns)
    cleared = await serving(cluster, kube, ns, im, new_sha)
    assert cond(cleared, "Degraded")["status"] == "False"  # lastFailure stays, as after any recovery


async def test_an_admitted_model_whose_object_is_gone_is_warned_of_once_and_rolls_out_when_it_is_back(
    cluster: Cluster,
    kube: ClusterClient,
    s3: str,  # noqa: F811
    nodes: Any,  # noqa: F811
    approver: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The new model's object is deleted after its validation; the approval then admits it, and applying it fails
    (ModelObjectNotFound). That decision is not written (the status would say it serves), so the resync loop asks
    the catalog again every round: with a Warning each time, until the object came back. Warned once now."""
    ns, im = cluster.namespace, new_name("s3late")
    two = await _second_model_validating(cluster, kube, s3, nodes, approver, tmp_path, im)
    client, new_key, new, new_sha, job = two.client, two.new_key, two.new, two.new_sha, two.job
    await end_validation(cluster, nodes, kube, ns, job, validator_result(new, new_sha))
    await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
    await asyncio.to_thread(client.delete_object, Bucket=BUCKET, Key=new_key)
    await approve(cluster, im, new_sha, approver, ns)

    async def failed() -> None:
        got = await get_im(kube, ns, im)
        assert cond(got, "Degraded")["reason"] == "ModelObjectNotFound", got["status"]
        assert got["status"]["activeModelSha256"] == CPU_SHA  # the old model's pods serve on

    await eventually(failed, timeout=30)
    await asyncio.sleep(3)
    before = (await events_of(kube, ns, im))["ModelObjectNotFound"]["count"]
    await asyncio.sleep(8)  # four rounds of the resync loop (every 2 s), each asking again
    warned = (await events_of(kube, ns, im))["ModelObjectNotFound"]["count"]
    assert warned == before <= 2, f"warned {warned} times for one failure ({before} before four resync rounds)"

    await asyncio.to_thread(client.put_object, Bucket=BUCKET, Key=new_key, Body=new.read_bytes())
    back = await serving(cluster, kube, ns, im, new_sha)  # asked again each round: it rolls out once it can
    assert cond(back, "Promoted")["status"] == "True"


async def test_a_burst_of_reconciles_reuses_the_link_and_a_new_object_or_new_keys_are_signed_at_once(
    cluster: Cluster,
    kube: ClusterClient,
    s3: str,  # noqa: F811
    credentials: str,  # noqa: F811
    signings: list[tuple[str, str, float]],  # noqa: F811
) -> None:
    """Eight reconciles of one model in a few seconds (spec edits that leave its model alone), more than
    linkRatePerModel (6 a minute) allows signings: one signing, the same link throughout, no LinkRateLimited. Then
    another object, another credentials Secret and rotated keys in that Secret are each signed at the reconcile that
    sees them (the operator does not watch Secrets: the spec edit after the rotation is that reconcile)."""
    ns, name = cluster.namespace, new_name("burst")
    ours = lambda: [s[1] for s in signings if s[0] == f"{ns}/{name}"]  # noqa: E731
    body = {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": name},
            "spec": {"replicas": 0, "model": {"s3": f"s3://{BUCKET}/{KEY}", "sha256": SHA}}}  # fmt: skip
    await kube.create(API, "inferencemodels", ns, body)
    first = await eventually(lambda: link_of(kube, ns, name), timeout=30)
    for i in range(8):
        im = await reconciled(kube, ns, name, {"scoreThreshold": 0.41 + i / 100})
        assert cond(im, "Degraded")["status"] == "False", im["status"]
    assert ours() == [f"s3://{BUCKET}/{KEY}"]
    assert await link_of(kube, ns, name) == first
    assert "LinkRateLimited" not in await events_of(kube, ns, name)
    secret = await kube.get("v1", "secrets", ns, link_secret_name(name))
    assert secret is not None
    assert secret["metadata"]["annotations"][LINK_OBJECT_ANNOTATION] == f"s3://{BUCKET}/{KEY}"
    assert secret["metadata"]["annotations"][LINK_CREDENTIALS_ANNOTATION] == f"{CREDENTIALS_NAMESPACE}/{credentials}"
    assert secret["metadata"]["annotations"][LINK_EXPIRES_ANNOTATION] == im["status"]["modelLink"]["expiresAt"]

    other = f"ssd/{name}.tflite"
    store = boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="k",
                         aws_secret_access_key="s")  # fmt: skip
    await asyncio.to_thread(store.copy_object, Bucket=BUCKET, Key=other, CopySource={"Bucket": BUCKET, "Key": KEY})
    await reconciled(kube, ns, name, {"model": {"s3": f"s3://{BUCKET}/{other}"}})
    assert f"/{BUCKET}/{other}?" in await link_of(kube, ns, name)

    keys = f"keys-{name}"
    data = {"AWS_ACCESS_KEY_ID": "other-key", "AWS_SECRET_ACCESS_KEY": "other-secret"}
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    await kube.create("v1", "secrets", CREDENTIALS_NAMESPACE, {"metadata": {"name": keys}, "data": encoded})
    try:
        await reconciled(kube, ns, name, {"model": {"s3Credentials": keys}})
        assert "X-Amz-Credential=other-key%2F" in await link_of(kube, ns, name)
        rotated = {"AWS_ACCESS_KEY_ID": base64.b64encode(b"rotated-key").decode()}
        await kube.merge_patch("v1", "secrets", CREDENTIALS_NAMESPACE, keys, {"data": rotated})
        await reconciled(kube, ns, name, {"scoreThreshold": 0.5})
        assert "X-Amz-Credential=rotated-key%2F" in await link_of(kube, ns, name)
    finally:
        await kube.delete("v1", "secrets", CREDENTIALS_NAMESPACE, keys)
    assert ours() == [f"s3://{BUCKET}/{KEY}"] + [f"s3://{BUCKET}/{other}"] * 3
