"""The model catalog, run for real by kopf: stages, the validation Job, approvals, rollbacks (docs/catalog.md).

Every test runs on the kmock emulator and on the real control plane, with the chart's RBAC and admission policies
there (the ModelApproval is created as the user `alice`, through impersonation, with the chart's korall-approver
role bound in the test namespace). What no machine here can run (a container: the validator, a vision pod's
self-test) is played as catalog_helpers.py says: the validation result is the real validator's, run in the test
process on the real model files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from catalog_helpers import (
    ADMIN,
    CPU_MODEL,
    CPU_SHA,
    MODELS,
    TPU_MODEL,
    TPU_SHA,
    approve,
    bind_approver,
    broken_model,
    cond,
    deployment_sha,
    end_pod,
    end_validation,
    events_of,
    get_im,
    job_pod,
    kubectl_korall,
    model_body,
    name,
    promoted,
    running_validation,
    serving,
    validator_result,
)
from cluster_helpers import API, Cluster, ClusterClient, eventually
from korall_operator.manifests import STAGE_LABEL, child_name

pytestmark = pytest.mark.usefixtures("operator")

APPROVER = "alice"


@pytest.fixture(scope="module")
def nodes(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The real control plane's fake nodes (they end the validation pods), or None on the emulator."""
    if cluster.is_emulated:
        yield None
        return
    if cluster.operator_kubeconfig == cluster.kubeconfig:
        pytest.skip("needs the real tier's fake nodes to end validation pods (a cluster of yours runs them)")
    yield request.getfixturevalue("real_cluster").cluster.nodes


@pytest.fixture(scope="module")
def approver(cluster: Cluster, nodes: Any) -> str:
    """`alice` may approve in the test namespace (on the real control plane: the chart's role, bound to her)."""
    if not cluster.is_emulated:
        import asyncio

        async def bind() -> None:
            kube = await ClusterClient.from_kubeconfig(cluster.kubeconfig)
            try:
                await bind_approver(kube, cluster.namespace, APPROVER)
            finally:
                await kube.close()

        asyncio.run(bind())
    return APPROVER


async def test_the_promotion_path_from_demo_to_production_and_a_broken_model_refused(
    cluster: Cluster, kube: ClusterClient, nodes: Any, approver: str, tmp_path: Path
) -> None:
    ns, im = cluster.namespace, name("path")
    # A demo model serves at once; it is validated for the record only.
    await kube.create(API, "inferencemodels", ns, model_body(im, "demo", {"file": CPU_MODEL}))
    await serving(cluster, kube, ns, im, CPU_SHA)
    await eventually(lambda: running_validation(kube, ns, im, CPU_SHA))

    # A new model (sha256) set to production: validated first, and the demo model keeps serving meanwhile.
    change = {"spec": {"stage": "production", "model": {"file": TPU_MODEL}, "accelerator": "edgetpu"}}
    await kube.merge_patch(API, "inferencemodels", ns, im, change)
    await eventually(lambda: promoted(kube, ns, im, "PendingValidation"))
    job = await eventually(lambda: running_validation(kube, ns, im, TPU_SHA))
    assert await deployment_sha(kube, ns, im) == CPU_SHA
    im_body = await get_im(kube, ns, im)
    assert (im_body["status"]["catalog"]["validated"], im_body["status"]["activeShortSha"]) == ("Running", CPU_SHA[:12])

    # The Job validates it (the Edge TPU build by its structure and its bundled CPU twin): approval is missing.
    result = validator_result(MODELS / TPU_MODEL, TPU_SHA, accelerator="edgetpu")
    await end_validation(cluster, nodes, kube, ns, job, result)
    pending = await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
    catalog = pending["status"]["catalog"]
    assert (catalog["validated"], catalog["approved"], catalog["shortSha"]) == ("Passed", "Pending", TPU_SHA[:12])
    assert f"kubectl korall approve {im}" in cond(pending, "Promoted")["message"]
    (record,) = [r for r in pending["status"]["validations"] if r["sha256"] == TPU_SHA]
    assert record["state"] == "Passed" and {i["image"] for i in record["images"]} >= {"chelsea.jpg", "grass.jpg"}
    assert record["checks"]["run"] == f"CPU twin {CPU_MODEL}" and record["durationSeconds"] > 0
    assert cond(pending, "Ready")["status"] == "True" and cond(pending, "Degraded")["status"] == "False"
    assert await deployment_sha(kube, ns, im) == CPU_SHA

    # Its requester's own approval does not count (four-eyes); someone else's does, and the new model rolls out.
    await approve(cluster, im, TPU_SHA, ADMIN, ns)

    async def refused_own() -> None:
        got = await promoted(kube, ns, im, "PendingApproval")
        assert f"approved only by {ADMIN}, who requested it" in cond(got, "Promoted")["message"]

    await eventually(refused_own, timeout=30)
    said = await kubectl_korall(cluster, "--as", approver, "approve", im, "-n", ns, "--comment", "golden set passed")
    assert f"{approver} approved model {TPU_SHA[:12]} of {im}" in said
    rolled = await serving(cluster, kube, ns, im, TPU_SHA)
    assert cond(rolled, "Promoted")["status"] == "True"
    assert rolled["status"]["catalog"]["approved"] == approver
    assert rolled["status"]["catalog"]["serving"]["approvedBy"] == approver

    # A broken model set to production fails its validation: refused, Degraded, and the approved one still serves.
    broken, broken_sha = broken_model(tmp_path)
    bad = {"spec": {"model": {"file": None, "url": "https://models.example/broken.tflite", "sha256": broken_sha},
                    "accelerator": "cpu"}}  # fmt: skip
    await kube.merge_patch(API, "inferencemodels", ns, im, bad)
    job = await eventually(lambda: running_validation(kube, ns, im, broken_sha))
    await end_validation(cluster, nodes, kube, ns, job, validator_result(broken, broken_sha))
    refused = await eventually(lambda: promoted(kube, ns, im, "ValidationFailed"), timeout=30)
    degraded = cond(refused, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ValidationFailed")
    assert "GoldenSetMismatch" in degraded["message"] and "chelsea.jpg: expected cat" in degraded["message"]
    assert cond(refused, "Ready")["status"] == "True"
    assert refused["status"]["activeModelSha256"] == TPU_SHA and await deployment_sha(kube, ns, im) == TPU_SHA
    assert refused["status"]["lastFailure"]["reason"] == "ValidationFailed"
    events = await eventually(lambda: _has(kube, ns, im, "ValidationFailed", "Promoted", "ValidationPassed"))
    assert events["ValidationFailed"]["type"] == "Warning"

    history = [(e["event"], e["sha256"][:12]) for e in refused["status"]["history"]]
    assert ("Promoted", TPU_SHA[:12]) in history and ("ValidationFailed", broken_sha[:12]) in history
    assert history.index(("Promoted", TPU_SHA[:12])) < history.index(("ValidationFailed", broken_sha[:12]))
    catalog_view = (await kubectl_korall(cluster, "catalog", "-n", ns)).splitlines()
    assert catalog_view[0].split() == ["NAME", "STAGE", "SHA", "VALIDATED", "APPROVED", "SERVING", "READY",
                                       "PROMOTED", "AGE"]  # fmt: skip
    (row,) = [line.split() for line in catalog_view if line.startswith(im + " ")]
    assert row[1:8] == ["production", broken_sha[:12], "Failed", "Pending", TPU_SHA[:12], "True", "ValidationFailed"]
    history_view = await kubectl_korall(cluster, "history", im, "-n", ns)
    assert "Promoted" in history_view and approver in history_view and "ValidationFailed" in history_view
    promoted_entry = next(e for e in refused["status"]["history"] if e["event"] == "Promoted")
    assert (promoted_entry["approvedBy"], promoted_entry["stage"], promoted_entry["validation"]) == (
        approver,
        "production",
        "Passed",
    )


async def _has(kube: ClusterClient, ns: str, im: str, *reasons: str) -> dict[str, dict[str, Any]]:
    events = await events_of(kube, ns, im)
    assert set(reasons) <= set(events), sorted(events)
    return events


async def test_a_first_production_model_runs_nothing_until_it_is_admitted(
    cluster: Cluster, kube: ClusterClient, nodes: Any, approver: str
) -> None:
    ns, im = cluster.namespace, name("first")
    await kube.create(API, "inferencemodels", ns, model_body(im, "production", {"file": CPU_MODEL}))
    held = await eventually(lambda: promoted(kube, ns, im, "PendingValidation"))
    assert cond(held, "Ready")["reason"] == "PendingValidation" and "specHash" not in held["status"]
    assert await deployment_sha(kube, ns, im) is None
    job = await running_validation(kube, ns, im, CPU_SHA)
    await end_validation(cluster, nodes, kube, ns, job, validator_result(MODELS / CPU_MODEL, CPU_SHA))
    await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
    assert await deployment_sha(kube, ns, im) is None
    await approve(cluster, im, CPU_SHA, approver, ns)
    await serving(cluster, kube, ns, im, CPU_SHA)


async def _production_tpu_model_rolling_out(
    cluster: Cluster, kube: ClusterClient, nodes: Any, approver: str, ns: str, im: str
) -> None:
    """Move a serving model to production on an Edge TPU: validated, approved, and its Deployment rolling it out."""
    change = {"spec": {"stage": "production", "model": {"file": TPU_MODEL}, "accelerator": "edgetpu"}}
    await kube.merge_patch(API, "inferencemodels", ns, im, change)
    job = await eventually(lambda: running_validation(kube, ns, im, TPU_SHA))
    result = validator_result(MODELS / TPU_MODEL, TPU_SHA, accelerator="edgetpu")
    await end_validation(cluster, nodes, kube, ns, job, result)
    await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
    await approve(cluster, im, TPU_SHA, approver, ns)

    async def rolling_out() -> None:
        assert await deployment_sha(kube, ns, im) == TPU_SHA

    await eventually(rolling_out, timeout=30)


async def test_a_production_model_whose_pods_never_get_ready_is_rolled_back_until_the_spec_changes(
    cluster: Cluster, kube: ClusterClient, nodes: Any, approver: str
) -> None:
    ns, im = cluster.namespace, name("back")
    body = model_body(im, "demo", {"file": CPU_MODEL}, validation={"rolloutDeadlineSeconds": 5})
    await kube.create(API, "inferencemodels", ns, body)
    await serving(cluster, kube, ns, im, CPU_SHA)  # the last good model

    rule = None
    if nodes is not None:  # the new model's pods crash-loop: never ready (the old ReplicaSet's keep running)
        from fake_nodes import CRASH_LOOP

        rule = nodes.fail(f"^{ns}/{im}-vision-", CRASH_LOOP, "self-test on golden set failed",
                          annotations={"korall.io/model-sha256": TPU_SHA})  # fmt: skip
    try:
        await _production_tpu_model_rolling_out(cluster, kube, nodes, approver, ns, im)

        async def rolled_back() -> tuple[dict[str, Any], dict[str, Any]]:
            got = await promoted(kube, ns, im, "RolledBack")
            degraded = cond(got, "Degraded")  # once the crash-looping pod is gone, the rollback is the failure
            assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack"), degraded
            return got, degraded

        rolled, degraded = await eventually(rolled_back, timeout=60)
        assert (
            f"rolled back to {CPU_SHA[:12]}" in degraded["message"] and "until the spec changes" in degraded["message"]
        )
        assert await deployment_sha(kube, ns, im) == CPU_SHA
        await serving(cluster, kube, ns, im, CPU_SHA)
        assert (await eventually(lambda: _has(kube, ns, im, "RolledBack")))["RolledBack"]["type"] == "Warning"
        assert rolled["status"]["catalog"]["rolledBack"]["sha256"] == TPU_SHA

        # Not tried again while the spec stays as it is, whatever else happens (the resync loop runs every 2 s).
        await _quiet(kube, ns, im, seconds=6)
        assert await deployment_sha(kube, ns, im) == CPU_SHA
    finally:
        if rule is not None:
            nodes.clear(rule)
    # A spec change is a new attempt: admitted again (validated and approved already), rolled out, and it stays.
    await kube.merge_patch(API, "inferencemodels", ns, im, {"spec": {"scoreThreshold": 0.55}})
    again = await serving(cluster, kube, ns, im, TPU_SHA)
    assert cond(again, "Promoted")["status"] == "True"


async def _quiet(kube: ClusterClient, ns: str, im: str, seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
    await promoted(kube, ns, im, "RolledBack")


async def test_a_rollout_outlasted_by_a_typo_in_another_field_is_judged_from_the_fix_and_not_rolled_back(
    cluster: Cluster, kube: ClusterClient, nodes: Any, approver: str
) -> None:
    """A production model rolls out; before its pods are ready, an edit of another field fails before the gate (a
    CaptureProfile that does not exist): nothing is applied, and the status stops following the pods, which then
    get ready. The typo is fixed after the rollout's deadline: the model whose pods ran ready all along must stay,
    not be rolled back (the gate judges the pods as the Deployment shows them, not the status that stopped)."""
    import asyncio

    ns, im = cluster.namespace, name("typo")
    deadline_s = 12
    body = model_body(im, "demo", {"file": CPU_MODEL}, validation={"rolloutDeadlineSeconds": deadline_s})
    await kube.create(API, "inferencemodels", ns, body)
    await serving(cluster, kube, ns, im, CPU_SHA)  # the last good model
    rule = None
    if nodes is not None:  # the new model's pods run, not ready yet (the emulator has no pods: nothing is ready)
        from fake_nodes import NOT_READY

        rule = nodes.fail(f"^{ns}/{im}-vision-", NOT_READY, annotations={"korall.io/model-sha256": TPU_SHA})
    try:
        await _production_tpu_model_rolling_out(cluster, kube, nodes, approver, ns, im)
        admitted_at = asyncio.get_running_loop().time()
        typo = {"spec": {"captureProfileRef": {"name": name("nowhere")}}}
        await kube.merge_patch(API, "inferencemodels", ns, im, typo)

        async def failed() -> None:
            obj = await get_im(kube, ns, im)
            assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"], obj["status"]
            assert cond(obj, "Degraded")["reason"] == "CaptureProfileNotFound", obj["status"]
            assert obj["status"]["catalog"]["rollout"] is not None  # still rolling out: no pod was ready

        await eventually(failed, timeout=30)
    finally:
        if rule is not None:
            nodes.clear(rule)  # the pods get ready meanwhile
    if cluster.is_emulated:  # play the Deployment controller: the new model's pods are ready
        deployment = await kube.get("apps/v1", "deployments", ns, child_name(im, "vision"))
        assert deployment is not None
        replicas = deployment["spec"]["replicas"]
        await kube.merge_patch_status("apps/v1", "deployments", ns, deployment["metadata"]["name"], {
            "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas})  # fmt: skip
    await asyncio.sleep(max(0.0, admitted_at + deadline_s + 2 - asyncio.get_running_loop().time()))
    assert await deployment_sha(kube, ns, im) == TPU_SHA

    await kube.merge_patch(API, "inferencemodels", ns, im, {"spec": {"captureProfileRef": None}})  # fixed
    kept = await serving(cluster, kube, ns, im, TPU_SHA)
    assert kept["status"]["catalog"].get("rolledBack") is None, kept["status"]["catalog"]

    async def last_good() -> None:
        catalog = (await get_im(kube, ns, im))["status"]["catalog"]
        assert catalog["lastGood"]["sha256"] == TPU_SHA and catalog.get("rollout") is None, catalog

    await eventually(last_good, timeout=30)
    assert "RolledBack" not in await events_of(kube, ns, im)


async def test_the_catalog_records_the_served_spec_whole_and_labels_production_only_once_admitted(
    cluster: Cluster, kube: ClusterClient, nodes: Any
) -> None:
    """The status is a merge patch: a record written whole kept the keys of the one before it (the old model's
    `file` beside the new `url`, a `tpuInterface` beside `accelerator: cpu`). Read back, that spec was invalid
    (InvalidSpec for good), and its digest no longer matched the stored key (endless re-promotion). And the same
    model moved to production carried the production label before the gate admitted it there."""
    ns, im = cluster.namespace, name("whole")
    tpu = model_body(im, "test", {"file": TPU_MODEL}, accelerator="edgetpu", tpuInterface="usb")
    await kube.create(API, "inferencemodels", ns, tpu)
    await serving(cluster, kube, ns, im, TPU_SHA)
    url = {"file": None, "url": "https://models.example/b.tflite", "sha256": CPU_SHA}
    change = {"spec": {"model": url, "accelerator": "cpu", "tpuInterface": None}}
    await kube.merge_patch(API, "inferencemodels", ns, im, change)
    moved = await serving(cluster, kube, ns, im, CPU_SHA)
    record = moved["status"]["catalog"]["serving"]
    assert record["spec"]["model"] == {"url": "https://models.example/b.tflite", "sha256": CPU_SHA}, record
    assert "tpuInterface" not in record["spec"] and record["spec"]["accelerator"] == "cpu", record

    # The same model, now asked for in production: validated first, and its pods keep their test label meanwhile.
    await kube.merge_patch(API, "inferencemodels", ns, im, {"spec": {"stage": "production"}})
    held = await eventually(lambda: promoted(kube, ns, im, "PendingValidation"))
    assert cond(held, "Degraded")["status"] == "False" and "lastFailure" not in held["status"], held["status"]
    deployment = await kube.get("apps/v1", "deployments", ns, child_name(im, "vision"))
    assert deployment is not None and deployment["metadata"]["labels"][STAGE_LABEL] == "test"

    # Another model in production: held for validation too, never an InvalidSpec from the record of the last one.
    other = {"spec": {"model": {"url": "https://models.example/c.tflite", "sha256": TPU_SHA}, "accelerator": "edgetpu"}}
    await kube.merge_patch(API, "inferencemodels", ns, im, other)
    await eventually(lambda: running_validation(kube, ns, im, TPU_SHA))
    again = await promoted(kube, ns, im, "PendingValidation")
    assert cond(again, "Degraded")["status"] == "False" and "lastFailure" not in again["status"], again["status"]
    assert again["status"]["catalog"]["serving"]["spec"]["model"]["url"].endswith("/b.tflite")


async def test_a_node_selector_at_odds_with_the_held_back_tpu_interface_says_it_waits_for_the_new_model(
    cluster: Cluster, kube: ClusterClient, nodes: Any
) -> None:
    """A serving model promoted to production and moved to a PCI TPU in one edit (tpuInterface and nodeSelector,
    which agree): while it waits for validation the Deployment keeps the admitted model's tpuInterface (a gated
    field), and the nodeSelector (not one) applies at once: no node can take both. The failure must say so, not
    tell the user to set the tpuInterface the spec already sets, and the Deployment keeps serving as it was."""
    ns, im = cluster.namespace, name("moved")
    await kube.create(API, "inferencemodels", ns, model_body(im, "test", {"file": TPU_MODEL}, accelerator="edgetpu"))
    await serving(cluster, kube, ns, im, TPU_SHA)
    move = {"stage": "production", "tpuInterface": "pci", "nodeSelector": {"korall.io/tpu": "pci"}}
    await kube.merge_patch(API, "inferencemodels", ns, im, {"spec": move})

    async def held() -> dict[str, Any]:
        obj = await promoted(kube, ns, im, "PendingValidation")
        assert cond(obj, "Degraded")["reason"] == "NodeSelectorConflict", obj["status"]
        return obj

    degraded = cond(await eventually(held), "Degraded")["message"]
    assert (
        f"model {TPU_SHA[:12]} serves with the accelerator and tpuInterface it was admitted with until this spec's "
        f"model {TPU_SHA[:12]} is admitted (PendingValidation), while the nodeSelector applies at once" in degraded
    ), degraded
    assert "clears once it is admitted" in degraded, degraded
    deployment = await kube.get("apps/v1", "deployments", ns, child_name(im, "vision"))
    assert deployment is not None and "nodeSelector" not in deployment["spec"]["template"]["spec"]


async def test_a_spec_failure_is_reported_once_whatever_the_catalog_has_pending(
    cluster: Cluster, kube: ClusterClient, nodes: Any, approver: str
) -> None:
    """A spec the operator cannot serve is reported once, and waits for a change. The reconcile stops at the spec,
    before the catalog's gate: a validation that ends or an approval that comes meanwhile cannot move the model,
    so neither may have it reconciled, and warned about, again (the resync loop did so every round)."""
    import asyncio

    ns, im = cluster.namespace, name("stuck")
    await kube.create(API, "inferencemodels", ns, model_body(im, "production", {"file": CPU_MODEL}))
    await eventually(lambda: promoted(kube, ns, im, "PendingValidation"))
    job = await running_validation(kube, ns, im, CPU_SHA)
    await kube.merge_patch(API, "inferencemodels", ns, im, {"spec": {"captureProfileRef": {"name": name("none")}}})

    async def failed() -> dict[str, Any]:
        obj = await get_im(kube, ns, im)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"], obj["status"]
        assert cond(obj, "Degraded")["reason"] == "CaptureProfileNotFound", obj["status"]
        return obj

    await eventually(failed)
    await end_validation(cluster, nodes, kube, ns, job, validator_result(MODELS / CPU_MODEL, CPU_SHA))

    async def validated() -> None:
        assert [r["state"] for r in (await failed())["status"]["validations"]] == ["Passed"]

    await eventually(validated, timeout=30)  # recorded, although the model cannot be served
    await approve(cluster, im, CPU_SHA, approver, ns)
    await asyncio.sleep(8)  # four rounds of the resync loop (every 2 s), with the approval in the indexes
    warned = (await events_of(kube, ns, im))["CaptureProfileNotFound"]
    assert warned["count"] == 1, f"warned {warned['count']} times for one spec failure"
    assert await deployment_sha(kube, ns, im) is None and "specHash" not in (await failed())["status"]

    # The spec is fixed: the validated and approved model is admitted and served.
    await kube.merge_patch(API, "inferencemodels", ns, im, {"spec": {"captureProfileRef": None}})
    await serving(cluster, kube, ns, im, CPU_SHA)


async def test_a_model_created_again_waits_for_its_predecessors_validation_job_to_go(
    cluster: Cluster, kube: ClusterClient, nodes: Any, request: pytest.FixtureRequest
) -> None:
    """An InferenceModel deleted and created again at once finds its predecessor's validation Job under the same
    name (the name holds no uid) until the garbage collector removes it: it must not take that Job for its own (it
    would wait, up to the validation timeout, for a Job about to vanish), but start its own once the old one is
    gone. A finalizer on the old Job stands in for the collector's lag.

    Nor does a pod of the old Job speak for the new one: the collector removes a Job before its pods, and a pod that
    is killed ends Failed. Its controlling owner is the old Job's uid, and the new record takes only its own Job's
    outcome (a finalizer keeps that pod, bound to no node, as long as the test needs it)."""
    import asyncio

    if not cluster.is_emulated:
        request.getfixturevalue("garbage_collection")
    ns, im = cluster.namespace, name("again")
    body = model_body(im, "production", {"file": CPU_MODEL})
    first = await kube.create(API, "inferencemodels", ns, body)
    await eventually(lambda: promoted(kube, ns, im, "PendingValidation"))
    job = await running_validation(kube, ns, im, CPU_SHA)
    held = await kube.merge_patch("batch/v1", "jobs", ns, job, {"metadata": {"finalizers": ["example.com/hold"]}})
    await kube.delete(API, "inferencemodels", ns, im)

    async def old_job_held() -> None:
        assert await kube.get(API, "inferencemodels", ns, im) is None
        old = await kube.get("batch/v1", "jobs", ns, job)
        assert old is not None and old["metadata"].get("deletionTimestamp"), old

    await eventually(old_job_held, timeout=30)
    second = await kube.create(API, "inferencemodels", ns, body)
    await asyncio.sleep(4)  # the new model's reconcile ran (and is retried) while the old Job is held
    validations = ((await get_im(kube, ns, im)).get("status") or {}).get("validations") or []
    assert not validations, f"the new model took the old model's Job: {validations}"

    await kube.merge_patch("batch/v1", "jobs", ns, job, {"metadata": {"finalizers": None}})

    async def own_job() -> None:
        running = await running_validation(kube, ns, im, CPU_SHA)
        got = await kube.get("batch/v1", "jobs", ns, running)
        assert got is not None, running
        (owner,) = got["metadata"]["ownerReferences"]
        assert owner["uid"] == second["metadata"]["uid"] != first["metadata"]["uid"]

    await eventually(own_job, timeout=30)
    obj = await promoted(kube, ns, im, "PendingValidation")
    assert [r["state"] for r in obj["status"]["validations"]] == ["Running"]

    new_job = await kube.get("batch/v1", "jobs", ns, job)
    assert new_job is not None
    leftover = job_pod(new_job, f"{job}-old", job_uid=held["metadata"]["uid"])
    leftover["metadata"]["finalizers"] = ["example.com/hold"]
    leftover["spec"] = {**leftover["spec"], "nodeName": "gone-node"}  # no scheduler, and no fake node, touches it
    await kube.create("v1", "pods", ns, leftover)
    try:
        await end_pod(kube, ns, leftover["metadata"]["name"], 143)  # killed: ValidatorCrashed, were it taken
        await asyncio.sleep(3)  # its event handled, and a round of the resync loop (every 2 s) over the indexes
        (record,) = (await promoted(kube, ns, im, "PendingValidation"))["status"]["validations"]
        assert (record["state"], record["job"]) == ("Running", job), record

        await end_validation(cluster, nodes, kube, ns, job, validator_result(MODELS / CPU_MODEL, CPU_SHA))
        passed = await eventually(lambda: promoted(kube, ns, im, "PendingApproval"), timeout=30)
        (record,) = passed["status"]["validations"]
        assert (record["state"], record["jobUid"]) == ("Passed", new_job["metadata"]["uid"]), record
    finally:
        await kube.merge_patch("v1", "pods", ns, leftover["metadata"]["name"], {"metadata": {"finalizers": None}})
        await kube.delete("v1", "pods", ns, leftover["metadata"]["name"])


async def test_a_validation_whose_job_is_deleted_is_an_error_at_once(
    cluster: Cluster, kube: ClusterClient, nodes: Any
) -> None:
    """A Job deleted before its pod reported is recorded as an Error naming that, not waited for until the
    validation timeout (15 minutes) passes."""
    ns, im = cluster.namespace, name("nojob")
    await kube.create(API, "inferencemodels", ns, model_body(im, "production", {"file": CPU_MODEL}))
    await eventually(lambda: promoted(kube, ns, im, "PendingValidation"))
    job = await running_validation(kube, ns, im, CPU_SHA)
    await kube.delete("batch/v1", "jobs", ns, job)

    held = await eventually(lambda: promoted(kube, ns, im, "ValidationError"), timeout=30)
    (record,) = held["status"]["validations"]
    assert (record["state"], record["reason"], record["job"]) == ("Error", "ValidationJobGone", job), record
    assert job in cond(held, "Promoted")["message"] and "ValidationJobGone" in cond(held, "Promoted")["message"]
    # the Event follows the status write (Gated.announce): waited for, not read once
    assert (await eventually(lambda: _has(kube, ns, im, "ValidationError")))["ValidationError"]["type"] == "Warning"


async def test_a_validation_the_spec_no_longer_asks_for_is_stopped_and_never_recorded(
    cluster: Cluster, kube: ClusterClient, nodes: Any, request: pytest.FixtureRequest
) -> None:
    """Quick model changes: each new model, or the same one under other validation settings, supersedes the one
    under validation, whose Job ran on to its end (a node's CPU held, maybe its TPU) and then recorded its outcome.
    Its Job is deleted with its pods (Background propagation: the pods go too, on the real garbage collector), an
    Event says so, and nothing of it is recorded: neither its deletion (ValidationJobGone) nor its killed pod (held
    here by a finalizer, so that its last status can be written as the kubelet would). A deleted InferenceModel's
    Job and pods go by their owner references."""
    import asyncio

    if not cluster.is_emulated:
        request.getfixturevalue("garbage_collection")
    ns, im = cluster.namespace, name("quick")
    await kube.create(API, "inferencemodels", ns, model_body(im, "production", {"file": CPU_MODEL}))
    first = await eventually(lambda: running_validation(kube, ns, im, CPU_SHA))
    killed = await _pod_of(cluster, kube, ns, first)
    await kube.merge_patch("v1", "pods", ns, killed, {"metadata": {"finalizers": ["example.com/hold"]}})
    try:
        # The same model under other validation settings (a golden set of its own): the first Job is superseded.
        golden = {"spec": {"validation": {"goldenSet": {"configMap": "yard-golden"}}}}
        await kube.merge_patch(API, "inferencemodels", ns, im, golden)

        async def second_started() -> str:
            job = await running_validation(kube, ns, im, CPU_SHA)
            assert job != first
            return job

        second = await eventually(second_started)
        said = await eventually(lambda: _has(kube, ns, im, "ValidationSuperseded"))
        message = said["ValidationSuperseded"]["message"]
        assert f"Job {first} deleted with its pod" in message and "under other validation settings" in message
        second_pods = [await _pod_of(cluster, kube, ns, second)]
        # Another model: the second Job is superseded too.
        tpu = {"spec": {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu"}}
        await kube.merge_patch(API, "inferencemodels", ns, im, tpu)
        third = await eventually(lambda: running_validation(kube, ns, im, TPU_SHA))

        async def stopped() -> None:
            for job in (first, second):
                assert await kube.get("batch/v1", "jobs", ns, job) is None, job
            assert [p for p in second_pods if await kube.get("v1", "pods", ns, p)] == []  # its pod went with it
            pod = await kube.get("v1", "pods", ns, killed)
            assert pod is not None and pod["metadata"].get("deletionTimestamp"), pod  # held by the test only

        await eventually(stopped, timeout=30)
        await end_pod(kube, ns, killed, 143)  # what the kubelet reports of a killed validator: were it taken, an Error
        await asyncio.sleep(3)  # its event handled, and a round of the resync loop (every 2 s) over the indexes
        obj = await promoted(kube, ns, im, "PendingValidation")
        assert [(r["job"], r["state"]) for r in obj["status"]["validations"]] == [(third, "Running")]
        assert not [e for e in obj["status"]["history"] if e["event"].startswith("Validation")], obj["status"]
        superseded = (await events_of(kube, ns, im))["ValidationSuperseded"]
        assert (superseded["type"], superseded["count"]) == ("Normal", 2), superseded
        assert f"Job {second} deleted with its pod: the spec now asks for model {TPU_SHA[:12]}" in superseded["message"]
        assert await kube.get("batch/v1", "jobs", ns, third) is not None
    finally:
        await kube.merge_patch("v1", "pods", ns, killed, {"metadata": {"finalizers": None}})

    # The InferenceModel deleted: its running validation Job and the Job's pod go with it (owner references).
    third_pod = await _pod_of(cluster, kube, ns, third)
    await kube.delete(API, "inferencemodels", ns, im)

    async def collected() -> None:
        assert await kube.get("batch/v1", "jobs", ns, third) is None
        assert await kube.get("v1", "pods", ns, third_pod) is None

    await eventually(collected, timeout=60)


async def _pod_of(cluster: Cluster, kube: ClusterClient, ns: str, job: str) -> str:
    """The name of the running pod of validation Job `job`: the Job controller's on the real control plane, or
    (the emulator runs no controllers) one written by the test as the Job controller and a kubelet would."""
    if cluster.is_emulated:
        pod = job_pod(await kube.get("batch/v1", "jobs", ns, job) or {}, f"{job}-x0")
        await kube.create("v1", "pods", ns, pod)
        await kube.merge_patch_status("v1", "pods", ns, pod["metadata"]["name"], {"phase": "Running"})
        return str(pod["metadata"]["name"])

    async def made() -> str:
        (pod,) = await kube.list("v1", "pods", ns, f"batch.kubernetes.io/job-name={job}")
        assert pod["status"].get("phase") == "Running", pod["status"]
        return str(pod["metadata"]["name"])

    return await eventually(made, timeout=30)
