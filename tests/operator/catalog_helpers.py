"""Helpers of the catalog's integration tests (test_catalog.py), on the emulator and on the real control plane.

What cannot exist here is a container: no validator runs in a pod and no vision pod self-tests. So the test plays
their part, the way each backend allows: the validator's JSON result comes from running the real validator
(korall_workloads.validate) in the test process on the real model files; on the real control plane the fake nodes
end the validation Job's pod with that result as its termination message (fake_nodes.py: SUCCEEDED / FAILED), and
a pod that never gets ready is a fake-node rule; on the emulator, which runs no controllers, the test writes the
Job's pod and the Deployment's status itself.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from cluster_helpers import API, Cluster, ClusterClient, cond, eventually, get_im
from korall_operator.catalog.outcomes import JOB_UID_LABEL
from korall_operator.manifests import MODEL_SHA256_ANNOTATION, child_name
from korall_operator.manifests.validation import JOB_ANNOTATION

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
CPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
TPU_MODEL = "mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite"
CPU_SHA = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
TPU_SHA = "1df6f563746346d656c58aa2ae801b32f2a29e4e4adee46a65aeac6decc5f887"
REQUESTER = "korall.io/requested-by"
ADMIN = "admin"  # the user the tests act as (the real control plane's token file names the admin so)


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def validator_result(model: Path, sha: str, **overrides: Any) -> str:
    """The real validator's JSON result for a model file (what it writes as its termination message)."""
    from korall_workloads.validate.checks import validate
    from korall_workloads.validate.settings import ValidateSettings

    settings = ValidateSettings(model_path=model, model_sha256=sha, models_dir=MODELS, num_threads=1, **overrides)
    return validate(settings).as_json()


def broken_model(folder: Path) -> tuple[Path, str]:
    """The real CPU model with its weights damaged, and the sha256 of the damaged bytes (a checksum that matches
    does not make a model good)."""
    data = (MODELS / CPU_MODEL).read_bytes()
    path = folder / "broken.tflite"
    path.write_bytes(data[:3_000_000] + b"\xff" * 200_000 + data[3_200_000:])
    return path, sha256(path)


def model_body(im: str, stage: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "InferenceModel",
        "metadata": {"name": im, "annotations": {REQUESTER: ADMIN}},
        "spec": {"model": model, "stage": stage, **spec},
    }


async def promoted(kube: ClusterClient, ns: str, im: str, reason: str, status: str = "False") -> dict[str, Any]:
    """The model once its Promoted condition says `reason` for its current generation."""
    obj = await get_im(kube, ns, im)
    got = cond(obj, "Promoted")
    assert (got["status"], got["reason"]) == (status, reason), obj.get("status")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    return obj


async def deployment_sha(kube: ClusterClient, ns: str, im: str) -> str | None:
    deployment = await kube.get("apps/v1", "deployments", ns, child_name(im, "vision"))
    if deployment is None:
        return None
    return str(deployment["spec"]["template"]["metadata"]["annotations"][MODEL_SHA256_ANNOTATION])


async def running_validation(kube: ClusterClient, ns: str, im: str, sha: str) -> str:
    """The Job of the Running validation of model `sha`."""
    obj = await get_im(kube, ns, im)
    validations = (obj.get("status") or {}).get("validations") or []
    jobs = [r["job"] for r in validations if r["sha256"] == sha and r["state"] == "Running"]
    assert jobs, validations
    assert await kube.get("batch/v1", "jobs", ns, jobs[-1]) is not None
    return jobs[-1]


async def end_validation(cluster: Cluster, nodes: Any, kube: ClusterClient, ns: str, job: str, result: str) -> None:
    """End the validation Job's pod with `result` as its termination message (exit 0 for Passed, else 1)."""
    passed = '"result":"Passed"' in result
    if nodes is not None:  # the real control plane: the Job controller made the pod, the fake kubelet ends it
        from fake_nodes import FAILED, SUCCEEDED

        nodes.fail(f"^{ns}/{job}-", SUCCEEDED if passed else FAILED, result)
        return
    pod = job_pod(await kube.get("batch/v1", "jobs", ns, job) or {}, f"{job}-x1")
    assert pod["metadata"]["annotations"][JOB_ANNOTATION] == job
    await kube.create("v1", "pods", ns, pod)
    await end_pod(kube, ns, pod["metadata"]["name"], 0 if passed else 1, result)


def job_pod(job: dict[str, Any], name: str, job_uid: str | None = None) -> dict[str, Any]:
    """A pod of the Job as the Job controller makes it: its template, owned by the Job (`job_uid`: another Job's of
    the same name, a predecessor's), with the controller's labels."""
    template, uid = job["spec"]["template"], job_uid or job["metadata"]["uid"]
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": uid,
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    labels = {**template["metadata"]["labels"], JOB_UID_LABEL: uid, "batch.kubernetes.io/job-name": owner["name"]}
    meta = {**template["metadata"], "name": name, "labels": labels, "ownerReferences": [owner]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}


async def end_pod(kube: ClusterClient, ns: str, pod: str, code: int, message: str = "", reason: str = "") -> None:
    """Write the status of a validation pod that ended (exit `code`, `message` its termination message), as the
    kubelet does."""
    ended = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"), "message": message}
    status = {"phase": "Succeeded" if code == 0 else "Failed",
              "containerStatuses": [{"name": "validate", "ready": False, "restartCount": 0,
                                     "state": {"terminated": ended}}]}  # fmt: skip
    await kube.merge_patch_status("v1", "pods", ns, pod, status)


async def serving(cluster: Cluster, kube: ClusterClient, ns: str, im: str, sha: str, timeout: float = 60) -> dict:  # noqa: ASYNC109
    """Wait until the model's ready pods run `sha` (the emulator: play the Deployment controller first)."""

    async def deployed() -> dict[str, Any]:
        deployment = await kube.get("apps/v1", "deployments", ns, child_name(im, "vision"))
        assert deployment is not None
        assert deployment["spec"]["template"]["metadata"]["annotations"][MODEL_SHA256_ANNOTATION] == sha
        return deployment

    deployment = await eventually(deployed, timeout=timeout)
    if cluster.is_emulated:
        replicas = deployment["spec"]["replicas"]
        await kube.merge_patch_status("apps/v1", "deployments", ns, deployment["metadata"]["name"], {
            "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas})  # fmt: skip

    async def ready() -> dict[str, Any]:
        obj = await get_im(kube, ns, im)
        assert cond(obj, "Ready")["status"] == "True", obj["status"]
        assert obj["status"].get("activeModelSha256") == sha, obj["status"]
        return obj

    return await eventually(ready, timeout=timeout)


async def events_of(kube: ClusterClient, ns: str, im: str) -> dict[str, dict[str, Any]]:
    return {e["reason"]: e for e in await kube.events_for(ns, im)}


class ImpersonatingClient(ClusterClient):
    """The admin's client acting as another user (Impersonate-User: the real API server then authorizes and admits
    the request as that user; the emulator ignores the header)."""

    user = ""

    def _headers(self) -> dict[str, str]:
        return {**super()._headers(), "Impersonate-User": self.user}

    @classmethod
    async def as_user(cls, kubeconfig: Path, user: str) -> ImpersonatingClient:
        client = await cls.from_kubeconfig(kubeconfig)
        assert isinstance(client, ImpersonatingClient)
        client.user = user
        return client


async def approve(cluster: Cluster, im: str, sha: str, user: str, ns: str) -> dict[str, Any]:
    """Create a ModelApproval as `user` (approvedBy: `user`): the admin itself, or another user impersonated."""
    client: ClusterClient
    if user == ADMIN:  # impersonating oneself would drop one's groups (system:masters)
        client = await ClusterClient.from_kubeconfig(cluster.kubeconfig)
    else:
        client = await ImpersonatingClient.as_user(cluster.kubeconfig, user)
    try:
        body = {"apiVersion": API, "kind": "ModelApproval", "metadata": {"generateName": f"{im}-"},
                "spec": {"inferenceModel": im, "sha256": sha, "approvedBy": user, "comment": "tested"}}  # fmt: skip
        return await client.create(API, "modelapprovals", ns, body)
    finally:
        await client.close()


async def bind_approver(kube: ClusterClient, ns: str, user: str) -> None:
    """A RoleBinding of the chart's korall-approver ClusterRole to `user` in `ns` (what a cluster admin does)."""
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": f"approver-{user}", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "korall-approver"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}  # fmt: skip
    await kube.create("rbac.authorization.k8s.io/v1", "rolebindings", ns, binding)


async def kubectl_korall(cluster: Cluster, *args: str) -> str:
    """The kubectl plugin (`python -m korall_operator.cli`, installed as kubectl-korall), as the admin."""
    import asyncio
    import subprocess
    import sys

    command = [sys.executable, "-m", "korall_operator.cli", "--kubeconfig", str(cluster.kubeconfig), *args]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
