"""The catalog's admission rules on a real API server: who may approve, and whose name an approval and a production
model carry (the chart's ValidatingAdmissionPolicies and ClusterRoles, installed by helm; the same rules
tests/operator/test_catalog_policies.py checks with cel-python).

Users are the API server's own: the admin's token impersonates `alice`, `bob` and `carol` (Impersonate-User), so
the server authorizes each request by RBAC and admits it by the policies exactly as for those users. alice may
approve and edit in the test namespace (the chart's korall-approver and korall-editor roles, bound to her), bob
may only edit, carol has no role at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from catalog_helpers import CPU_MODEL, TPU_MODEL, ImpersonatingClient
from cluster import RealClusterWithChart
from cluster_helpers import API, ClusterClient
from korall_operator.k8s import ApiError

REQUESTER = "korall.io/requested-by"
SHA = "a" * 64


def binding(role: str, user: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{role}-{user}", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"korall-{role}"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}  # fmt: skip


@pytest.fixture(scope="module")
def roles(real_cluster: RealClusterWithChart, namespace: str) -> str:
    for role, user in (("approver", "alice"), ("editor", "alice"), ("editor", "bob")):
        real_cluster.cluster.api(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            binding(role, user, namespace),
        )
    return namespace


@pytest_asyncio.fixture
async def users(real_cluster: RealClusterWithChart) -> AsyncIterator[dict[str, ImpersonatingClient]]:
    clients = {u: await ImpersonatingClient.as_user(real_cluster.cluster.admin_kubeconfig, u) for u in
               ("alice", "bob", "carol")}  # fmt: skip
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


def refusal(e: ApiError) -> tuple[int, str]:
    return e.status, str(json.loads(e.body or "{}").get("message"))


def approval(approved_by: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ModelApproval", "metadata": {"generateName": "yard-"},
            "spec": {"inferenceModel": "yard", "sha256": SHA, "approvedBy": approved_by}}  # fmt: skip


async def test_an_approval_is_made_by_an_approver_in_their_own_name(
    roles: str, users: dict[str, ImpersonatingClient], kube: ClusterClient
) -> None:
    ns = roles
    made = await users["alice"].create(API, "modelapprovals", ns, approval("alice"))
    assert made["spec"]["approvedBy"] == "alice"

    with pytest.raises(ApiError) as impersonating:  # alice may approve, but not in bob's name
        await users["alice"].create(API, "modelapprovals", ns, approval("bob"))
    status, message = refusal(impersonating.value)
    assert status == 403 and "spec.approvedBy must be your own user name, alice, not bob" in message

    for outsider in ("bob", "carol"):  # bob may edit models, carol nothing: neither may approve (RBAC)
        with pytest.raises(ApiError) as forbidden:
            await users[outsider].create(API, "modelapprovals", ns, approval(outsider))
        status, message = refusal(forbidden.value)
        assert status == 403 and f'User "{outsider}" cannot create resource "modelapprovals"' in message

    with pytest.raises(ApiError) as changed:  # immutable, even for the cluster's admin
        await kube.merge_patch(API, "modelapprovals", ns, made["metadata"]["name"], {"spec": {"sha256": "b" * 64}})
    assert changed.value.status == 422 and "a ModelApproval cannot be changed" in refusal(changed.value)[1]


def production(name: str, by: str | None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if by:
        meta["annotations"] = {REQUESTER: by}
    return {"apiVersion": API, "kind": "InferenceModel", "metadata": meta,
            "spec": {"model": {"file": CPU_MODEL}, "stage": "production", **spec}}  # fmt: skip


async def test_a_production_models_requester_is_who_the_api_server_says_changed_it(
    roles: str, users: dict[str, ImpersonatingClient]
) -> None:
    ns, alice, bob = roles, users["alice"], users["bob"]
    with pytest.raises(ApiError) as unstamped:
        await alice.create(API, "inferencemodels", ns, production("yard", None))
    status, message = refusal(unstamped.value)
    assert status == 403 and "korall.io/requested-by to your own user name, alice," in message
    with pytest.raises(ApiError) as forged:
        await alice.create(API, "inferencemodels", ns, production("yard", "bob"))
    assert "your own user name, alice," in refusal(forged.value)[1]

    await alice.create(API, "inferencemodels", ns, production("yard", "alice"))
    await bob.merge_patch(API, "inferencemodels", ns, "yard", {"spec": {"replicas": 2}})  # not a request: allowed
    with pytest.raises(ApiError) as taken_over:  # the requester changes only with the model or the stage
        await bob.merge_patch(API, "inferencemodels", ns, "yard", {"metadata": {"annotations": {REQUESTER: "bob"}}})
    assert "changes only with its model or stage" in refusal(taken_over.value)[1]
    new_model = {"spec": {"model": {"file": TPU_MODEL}, "accelerator": "edgetpu"}}
    with pytest.raises(ApiError) as unsigned:  # bob requests a new model: under his own name, or not at all
        await bob.merge_patch(API, "inferencemodels", ns, "yard", new_model)
    assert "your own user name, bob," in refusal(unsigned.value)[1]
    await bob.merge_patch(
        API, "inferencemodels", ns, "yard", {**new_model, "metadata": {"annotations": {REQUESTER: "bob"}}}
    )
    with pytest.raises(ApiError) as outsider:
        await users["carol"].merge_patch(API, "inferencemodels", ns, "yard", {"spec": {"replicas": 3}})
    assert outsider.value.status == 403 and 'User "carol" cannot patch' in refusal(outsider.value)[1]

    # Below production the annotation means nothing, and nobody has to set it.
    await bob.create(
        API, "inferencemodels", ns, {**production("sandbox", None), "spec": {"model": {"file": CPU_MODEL}}}
    )


def test_kubectl_get_im_reads_as_the_catalog_and_kubectl_korall_is_a_plugin(
    real_cluster: RealClusterWithChart, roles: str
) -> None:
    ns = roles
    body = {"apiVersion": API, "kind": "InferenceModel", "metadata": {"name": "listed"},
            "spec": {"model": {"file": CPU_MODEL}}}  # fmt: skip
    real_cluster.cluster.api("POST", f"/apis/korall.io/v1alpha1/namespaces/{ns}/inferencemodels", body)
    header = real_cluster.cluster.run("kubectl", "get", "im", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "STAGE", "SHA", "VALIDATED", "APPROVED", "SERVING", "READY", "AGE"]
    # kubectl finds plugins on PATH by name: the console script kubectl-korall, or this stand-in for a checkout
    plugins = Path(real_cluster.cluster.plane.workdir) / "plugins"
    plugins.mkdir(exist_ok=True)
    script = plugins / "kubectl-korall"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m korall_operator.cli "$@"\n')
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{plugins}:{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(real_cluster.cluster.admin_kubeconfig)}  # fmt: skip
    kubectl = str(real_cluster.cluster.tools / "kubectl")
    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert str(script) in listed.stdout
    out = subprocess.run([kubectl, "korall", "catalog", "-n", ns], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["NAME", "STAGE", "SHA"]
