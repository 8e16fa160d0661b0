"""The emulator helper's own realism, over real HTTP: what kopf and the operator rely on (see emulator.py).

Plain aiohttp requests, no operator: each test pins one API-server behaviour the emulator adds to kmock 0.8.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from emulator import EmulatedCluster

IMS = "/apis/korall.io/v1alpha1/namespaces/default/inferencemodels"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedCluster]:
    cluster = EmulatedCluster(Path(tmp_path_factory.mktemp("kmock-realism"))).start()
    yield cluster
    cluster.stop()


class Api:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json", **params: str
    ) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with self.session.request(method, self.url + path, data=data, headers=headers, params=params) as rsp:
            return rsp.status, await rsp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        status, got = await self.call(method, path, body, content_type)
        assert status in (200, 201), (status, got)
        return got


@pytest_asyncio.fixture
async def api(emulated: EmulatedCluster) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, emulated.url)


def im(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "korall.io/v1alpha1", "kind": "InferenceModel", "metadata": {"name": name}, "spec": spec}


async def test_discovery_serves_the_crds_and_builtins(api: Api) -> None:
    groups = await api.ok("GET", "/apis")
    assert {"korall.io", "apps", "coordination.k8s.io"} <= {g["name"] for g in groups["groups"]}
    resources = {r["name"]: r for r in (await api.ok("GET", "/apis/korall.io/v1alpha1"))["resources"]}
    assert resources["inferencemodels"]["shortNames"] == ["im"]
    assert resources["inferencemodels"]["categories"] == ["korall"]
    assert resources["inferencemodels"]["namespaced"] is True
    assert "inferencemodels/status" in resources and "captureprofiles" in resources
    core = {r["name"] for r in (await api.ok("GET", "/api/v1"))["resources"]}
    assert {"namespaces", "events", "services", "configmaps"} <= core


async def test_create_fills_server_metadata_and_generate_name(api: Api) -> None:
    created = await api.ok("POST", IMS, im("meta", stage="test"))
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0 and meta["namespace"] == "default"

    event = {"metadata": {"generateName": "kopf-event-"}, "reason": "Test"}
    posted = await api.ok("POST", "/api/v1/namespaces/default/events", event)
    assert posted["metadata"]["name"].startswith("kopf-event-") and len(posted["metadata"]["name"]) > 11

    assert (await api.call("POST", IMS, im("meta")))[0] == 409
    assert (await api.call("POST", IMS, {"metadata": {}}))[0] == 422


async def test_resource_version_increases_and_lists_report_it(api: Api) -> None:
    a = await api.ok("POST", IMS, im("rv-a"))
    b = await api.ok("PATCH", f"{IMS}/rv-a", {"spec": {"stage": "demo"}}, MERGE)
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    listed = await api.ok("GET", IMS)
    assert int(listed["metadata"]["resourceVersion"]) >= int(b["metadata"]["resourceVersion"])
    assert listed["kind"] == "InferenceModelList"


async def test_generation_bumps_on_spec_changes_only(api: Api) -> None:
    await api.ok("POST", IMS, im("gen", stage="test"))
    same = await api.ok("PATCH", f"{IMS}/gen", {"metadata": {"annotations": {"a": "b"}}}, MERGE)
    assert same["metadata"]["generation"] == 1
    status = await api.ok("PATCH", f"{IMS}/gen/status", {"status": {"observedGeneration": 1}}, MERGE)
    assert status["metadata"]["generation"] == 1 and status["status"] == {"observedGeneration": 1}
    # The status subresource: the main endpoint ignores status, the /status endpoint ignores the rest.
    ignored = await api.ok("PATCH", f"{IMS}/gen", {"status": {"observedGeneration": 9}}, MERGE)
    assert ignored["status"] == {"observedGeneration": 1}
    spec_via_status = await api.ok("PATCH", f"{IMS}/gen/status", {"spec": {"stage": "demo"}}, MERGE)
    assert spec_via_status["spec"]["stage"] == "test"
    bumped = await api.ok("PATCH", f"{IMS}/gen", {"spec": {"stage": "production"}}, MERGE)
    assert bumped["metadata"]["generation"] == 2


async def test_json_patch_test_op_failure_is_422(api: Api) -> None:
    created = await api.ok("POST", IMS, im("jp"))
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/spec/x", "value": 1},
    ]
    status, body = await api.call("PATCH", f"{IMS}/jp", ops, "application/json-patch+json")
    assert status == 422 and body["kind"] == "Status"
    ops[0]["value"] = rv
    patched = await api.ok("PATCH", f"{IMS}/jp", ops, "application/json-patch+json")
    assert patched["spec"]["x"] == 1


async def test_merge_patch_with_stale_resource_version_is_409(api: Api) -> None:
    created = await api.ok("POST", IMS, im("occ"))
    await api.ok("PATCH", f"{IMS}/occ", {"spec": {"stage": "demo"}}, MERGE)
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "status": {"x": 1}}
    assert (await api.call("PATCH", f"{IMS}/occ/status", stale, MERGE))[0] == 409


async def test_server_side_apply_creates_then_replaces_owned_fields(api: Api) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa"}, "spec": {"replicas": 1}}
    apply = "application/apply-patch+yaml"
    created = await api.ok("PATCH", f"{DEPLOYMENTS}/ssa?fieldManager=t&force=true", deployment, apply)
    assert created["metadata"]["generation"] == 1
    deployment["spec"] = {"replicas": 2}
    deployment["metadata"]["resourceVersion"] = "1"  # ignored by apply, as by a real server with force
    applied = await api.ok("PATCH", f"{DEPLOYMENTS}/ssa?fieldManager=t&force=true", deployment, apply)
    assert applied["spec"] == {"replicas": 2} and applied["metadata"]["generation"] == 2
    again = await api.ok("PATCH", f"{DEPLOYMENTS}/ssa?fieldManager=t&force=true", deployment, apply)
    assert again["metadata"]["generation"] == 2  # an identical apply changes nothing


async def _watch(api: Api, path: str, count: int, **params: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with api.session.get(api.url + path, params={"watch": "true", **params}) as rsp:
        async for line in rsp.content:
            if line.strip():
                events.append(json.loads(line))
            if len(events) >= count:
                break
    return events


async def test_watch_resumes_from_a_resource_version(api: Api) -> None:
    await api.ok("POST", IMS, im("w1"))
    listed = await api.ok("GET", IMS)
    since = listed["metadata"]["resourceVersion"]
    await api.ok("PATCH", f"{IMS}/w1", {"spec": {"stage": "demo"}}, MERGE)
    await api.ok("POST", IMS, im("w2"))
    await api.ok("DELETE", f"{IMS}/w2")
    events = await asyncio.wait_for(_watch(api, IMS, 3, resourceVersion=since), timeout=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "w1"),
        ("ADDED", "w2"),
        ("DELETED", "w2"),
    ]


async def test_watch_ends_after_timeout_seconds(api: Api) -> None:
    listed = await api.ok("GET", DEPLOYMENTS)
    params = {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
    async with api.session.get(api.url + DEPLOYMENTS, params=params) as rsp:
        body = await asyncio.wait_for(rsp.read(), timeout=5)  # returns because the server ends the stream
    assert body.strip() == b""


async def test_label_selector_filters_lists(api: Api) -> None:
    for name, stage in (("sel-a", "test"), ("sel-b", "demo")):
        body = im(name)
        body["metadata"]["labels"] = {"stage": stage}
        await api.ok("POST", IMS, body)
    status, got = await api.call("GET", IMS, labelSelector="stage=demo")
    assert status == 200 and [i["metadata"]["name"] for i in got["items"]] == ["sel-b"]
    status, got = await api.call("GET", IMS, labelSelector="stage!=demo,stage")
    assert [i["metadata"]["name"] for i in got["items"]] == ["sel-a"]


async def test_finalizers_hold_deletion_and_gc_cascades_to_dependents(api: Api) -> None:
    body = im("owner")
    body["metadata"]["finalizers"] = ["test/hold"]
    owner = await api.ok("POST", IMS, body)
    ref = {
        "apiVersion": "korall.io/v1alpha1",
        "kind": "InferenceModel",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    child = {"metadata": {"name": "child", "ownerReferences": [ref]}, "spec": {"replicas": 1}}
    await api.ok("POST", DEPLOYMENTS, child)

    marked = await api.ok("DELETE", f"{IMS}/owner")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await api.call("GET", f"{IMS}/owner"))[0] == 200  # held by its finalizer
    await api.ok("PATCH", f"{IMS}/owner", {"metadata": {"finalizers": None}}, MERGE)
    assert (await api.call("GET", f"{IMS}/owner"))[0] == 404
    assert (await api.call("GET", f"{DEPLOYMENTS}/child"))[0] == 404  # the emulated garbage collector


async def test_a_dependent_applied_after_its_owner_went_is_collected(api: Api) -> None:
    """A controller that raced the delete (its reconcile began before it) applies a child of a gone owner; the real
    collector deletes such a dependent once it finds the owner gone, and so does the emulator's."""
    owner = await api.ok("POST", IMS, im("raced"))
    await api.ok("DELETE", f"{IMS}/raced")
    ref = {
        "apiVersion": "korall.io/v1alpha1",
        "kind": "InferenceModel",
        "name": "raced",
        "uid": owner["metadata"]["uid"],
    }
    late = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "late", "ownerReferences": [ref]}}
    await api.ok("PATCH", f"{DEPLOYMENTS}/late?fieldManager=t&force=true", late, "application/apply-patch+yaml")
    assert (await api.call("GET", f"{DEPLOYMENTS}/late"))[0] == 404
    # an owner that exists keeps its dependents, however they were written
    kept = await api.ok("POST", IMS, im("raced"))  # the same name again: a new uid
    late["metadata"]["ownerReferences"] = [{**ref, "uid": kept["metadata"]["uid"]}]
    await api.ok("PATCH", f"{DEPLOYMENTS}/late?fieldManager=t&force=true", late, "application/apply-patch+yaml")
    assert (await api.call("GET", f"{DEPLOYMENTS}/late"))[0] == 200


async def test_namespaces_are_served(api: Api, emulated: EmulatedCluster) -> None:
    emulated.create_namespace("extra")
    got = await api.ok("GET", "/api/v1/namespaces/extra")
    assert got["metadata"]["name"] == "extra"
    names = {n["metadata"]["name"] for n in (await api.ok("GET", "/api/v1/namespaces"))["items"]}
    assert {"default", "extra"} <= names


async def test_a_crd_applied_through_the_api_is_established_and_served(api: Api) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}],
        },
    }
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com?fieldManager=t&force=true"
    applied = await api.ok("PATCH", path, crd, "application/apply-patch+yaml")
    conditions = {c["type"]: c["status"] for c in applied["status"]["conditions"]}
    assert conditions["Established"] == "True"
    resources = {r["name"] for r in (await api.ok("GET", "/apis/example.com/v1"))["resources"]}
    assert {"widgets", "widgets/status"} <= resources
    created = await api.ok("POST", "/apis/example.com/v1/namespaces/default/widgets", {"metadata": {"name": "w"}})
    assert created["metadata"]["generation"] == 1
