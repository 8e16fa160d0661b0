"""A Kubernetes API emulator realistic enough to serve kopf, built on kmock 0.8's `KubernetesEmulator`.

kmock 0.8 stores objects and streams watch events, but it leaves out what kopf (and our operator) rely on:

- **metadata**: `uid`, `creationTimestamp`, `generation` (bumped only when something outside `metadata` and
  `status` changes, never by a status write) and a cluster-wide `resourceVersion` that increases on every write
  and is reported in LIST responses too; `generateName` (kopf's Events use it);
- **watches honoured from a resourceVersion**: a watch with `?resourceVersion=N` replays the writes after N from
  an in-memory event log, instead of re-sending every object as ADDED; `timeoutSeconds` ends the stream like a
  real API server does, so kopf's reconnect path runs; `labelSelector` (equality and existence terms) filters
  LIST and WATCH;
- **patch flavours by Content-Type**: JSON merge patch (also used for strategic merge patch), JSON patch with a
  failed `test` op answered by HTTP 422 (kopf uses it for optimistic concurrency), and server-side apply
  (`application/apply-patch+yaml`, approximated for a single field manager: the applied fields replace the old
  ones, metadata set by the server and the status are kept; creates the object when missing);
- **optimistic concurrency**: a merge patch carrying `metadata.resourceVersion` fails with 409 on mismatch;
- **the status subresource**: for resources declared with `subresources={'status'}`, PATCH on `/status` changes
  only `status` and PATCH on the object ignores `status`, as in a real API server;
- **deletion**: `preconditions.uid` in a DELETE body is honoured (409); finalizers hold an object with a
  `deletionTimestamp`; and, since the emulator runs no controllers, a tiny **garbage collector** deletes
  dependents whose `ownerReferences` name a deleted owner's uid (background cascading deletion), also one
  created after its owner went (a controller that raced the delete: the real collector deletes such a dependent
  once it finds the owner gone). No other controller runs: Deployments never get pods or a status unless a test
  writes it.

`EmulatedCluster` runs the emulator on a loopback port in its own thread and event loop (like kopf's
`KopfRunner` runs the operator), so a module-scoped cluster outlives pytest's per-test event loops, and writes a
kubeconfig that points at it. Declare resources with `declare()`; `declare_crds()` reads them from `crds/`.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import datetime
import json
import re
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps, enums, parsing, rendering

ROOT = Path(__file__).resolve().parents[2]

# (group, version, plural, kind, namespaced, subresources) for the built-in resources the operator touches.
BUILTIN_RESOURCES: tuple[tuple[str, str, str, str, bool, tuple[str, ...]], ...] = (
    ("", "v1", "namespaces", "Namespace", False, ("status",)),
    ("", "v1", "events", "Event", True, ()),
    ("", "v1", "services", "Service", True, ("status",)),
    ("", "v1", "configmaps", "ConfigMap", True, ()),
    ("", "v1", "secrets", "Secret", True, ()),
    ("apps", "v1", "deployments", "Deployment", True, ("status", "scale")),
    ("", "v1", "pods", "Pod", True, ("status",)),
    ("batch", "v1", "jobs", "Job", True, ("status",)),
    ("events.k8s.io", "v1", "events", "Event", True, ()),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, ("status",)),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, ()),
)

ResourceKey = tuple[str, str, str]  # group, version, plural
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACE_URL = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, None deletes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything whose change bumps `metadata.generation`: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def matches_selector(labels: Mapping[str, str], selector: str | None) -> bool:
    """Equality (`a=b`, `a==b`, `a!=b`) and existence (`a`, `!a`) terms of a Kubernetes label selector."""
    if not selector:
        return True
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class RealisticEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server semantics kopf needs (see the module docstring).

    All writes go through `_write()`, which owns resourceVersion, generation, the event log and the GC; reads
    (LIST/WATCH/GET) are served from the same store, `self.objects`, so kmock's assertions keep working.
    """

    _rv: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, ResourceKey, str, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)
    _gone_uids: set[str] = attrs.field(factory=set, init=False)
    direct_reads: bool = attrs.field(default=True)
    """Serve GET/LIST/WATCH of resources straight from the store. kmock's generic request matching costs O(objects)
    per request (tens of ms with a thousand objects); turn this off to intercept reads with kmock reactions."""
    watchers: list[Callable[[str, str, dict[str, Any]], None]] = attrs.field(factory=list, init=False)
    """Called in the emulator's loop on every stored write: (plural, event type, object). For benches."""

    # --- declarations -------------------------------------------------------------------------------------

    def declare(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        kind: str,
        namespaced: bool = True,
        subresources: Iterable[str] = (),
        shortnames: Iterable[str] = (),
        categories: Iterable[str] = (),
        singular: str | None = None,
    ) -> None:
        """Make a resource discoverable (kopf resolves resources through /apis discovery)."""
        self.resources[f"{group}/{version}/{plural}" if group else f"v1/{plural}"] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            singular=singular or kind.lower(),
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            shortnames=set(shortnames),
            categories=set(categories),
            subresources=set(subresources),
        )

    def declare_builtins(self) -> None:
        for group, version, plural, kind, namespaced, subresources in BUILTIN_RESOURCES:
            self.declare(group, version, plural, kind=kind, namespaced=namespaced, subresources=subresources)

    def declare_crds(self, crds_dir: Path = ROOT / "crds") -> list[dict[str, Any]]:
        """Declare every served version of every CRD in `crds_dir` and store the CRD objects themselves."""
        crds: list[dict[str, Any]] = []
        for path in sorted(crds_dir.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                crds.append(doc)
                body = self._new_metadata(self._establish(doc), None)
                self._store(CRDS, None, doc["metadata"]["name"], body)
        return crds

    def _establish(self, crd: dict[str, Any]) -> dict[str, Any]:
        """What the apiextensions controller does with a CRD: serve its resources, report it Established."""
        spec, names = crd["spec"], crd["spec"]["names"]
        for version in spec["versions"]:
            if version.get("served", True):
                self.declare(
                    spec["group"],
                    version["name"],
                    names["plural"],
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    subresources=set(version.get("subresources", {})),
                    shortnames=names.get("shortNames", ()),
                    categories=names.get("categories", ()),
                    singular=names.get("singular"),
                )
        established = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
        ]
        return {**crd, "status": {"conditions": established, "acceptedNames": names}}

    def _has_status_subresource(self, resource: kmock.resource) -> bool:
        try:
            return "status" in self.resources[resource].subresources
        except KeyError:
            return False

    def _kind(self, resource: kmock.resource) -> str:
        try:
            return self.resources[resource].kind or resource.plural.capitalize()
        except KeyError:
            return (resource.plural or "").capitalize()

    # --- the store ----------------------------------------------------------------------------------------

    def _get(self, resource: kmock.resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self.objects._objects:
            return None
        obj = self.objects._objects[key]
        return None if obj.deleted else obj.raw

    def _store(self, resource: kmock.resource, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        key = (resource, namespace, name)
        if key in self.objects._objects:
            self.objects._objects[key].history.append(body)
        else:
            self.objects._objects[key] = kmock.Object(body)

    def _new_metadata(self, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        self._rv += 1
        meta = dict(body.get("metadata") or {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(
            uid=str(uuid.uuid4()),
            creationTimestamp=datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            generation=1,
            resourceVersion=str(self._rv),
        )
        return {**body, "metadata": meta}

    async def _emit(self, resource: kmock.resource, type_: str, body: dict[str, Any]) -> None:
        self._log.append((self._rv, (resource.group, resource.version, resource.plural), type_, body))
        for watcher in self.watchers:
            watcher(resource.plural or "", type_, body)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    async def end_watches(self) -> None:
        """End every open watch stream now, as an API server does at its `timeoutSeconds` or on a restart.

        Clients are expected to watch again from their last resourceVersion; new watches are served as usual.
        """
        self._watch_epoch += 1
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    async def close_watches(self) -> None:
        """End every open watch stream and refuse to keep new ones open (shutdown), so the HTTP server can stop."""
        self._closing = True
        await self.end_watches()

    @property
    def resource_version(self) -> int:
        return self._rv

    # --- writes -------------------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
        return kmock.KubernetesError(status=status, reason=reason, message=message, details={})

    async def _write(self, request: rendering.Request) -> dict[str, Any] | None:
        """Apply one mutating request to the store; return the object to answer with (None: not a write)."""
        resource = request.resource
        assert resource is not None
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if request.action == enums.action.CREATE:
            return await self._create(resource, request.namespace, request.data or {})
        if request.name is None:
            return None
        current = self._get(resource, request.namespace, request.name)
        if request.action == enums.action.DELETE:
            if current is None:
                raise kmock.KubernetesObjectNotFoundError()
            wanted_uid = ((request.data or {}).get("preconditions") or {}).get("uid")
            if wanted_uid is not None and wanted_uid != current["metadata"]["uid"]:
                raise self._error(409, "Conflict", f"Precondition failed: UID in precondition: {wanted_uid}")
            return await self._delete(resource, request.namespace, request.name, current)
        if request.action == enums.action.UPDATE:
            if current is None:
                if content_type == "application/apply-patch+yaml" and request.subresource is None:
                    body = dict(request.data or {})
                    body.setdefault("metadata", {})["name"] = request.name
                    return await self._create(resource, request.namespace, body)
                raise kmock.KubernetesObjectNotFoundError()
            return await self._patch(resource, request, current, content_type)
        return None

    async def _create(self, resource: kmock.resource, namespace: str | None, data: dict[str, Any]) -> dict[str, Any]:
        meta = data.get("metadata") or {}
        if not meta.get("name") and not meta.get("generateName"):
            raise self._error(422, "Invalid", "metadata.name or metadata.generateName is required")
        namespace = namespace or meta.get("namespace")
        if meta.get("name") and self._get(resource, namespace, meta["name"]) is not None:
            raise self._error(409, "AlreadyExists", f"{resource.plural} {meta['name']!r} already exists")
        body = self._new_metadata(dict(data), namespace)
        if self._has_status_subresource(resource):
            body.pop("status", None)
        if resource == CRDS:
            body = self._establish(body)
        self._store(resource, namespace, body["metadata"]["name"], body)
        await self._emit(resource, "ADDED", body)
        if any(ref.get("uid") in self._gone_uids for ref in body["metadata"].get("ownerReferences") or []):
            await self._delete(resource, namespace, body["metadata"]["name"], body)  # its owner is gone
        return body

    async def _patch(
        self, resource: kmock.resource, request: rendering.Request, current: dict[str, Any], content_type: str
    ) -> dict[str, Any]:
        data = request.data
        if content_type == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(copy.deepcopy(current), data or [])
            except jsonpatch.JsonPatchTestFailed as e:
                raise self._error(422, "Invalid", f"the server rejected our request due to an error: {e}") from e
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise self._error(422, "Invalid", f"invalid JSON patch: {e}") from e
        elif content_type == "application/apply-patch+yaml":
            new = copy.deepcopy(current)
            for key, value in (data or {}).items():
                if key == "metadata":  # only the client-owned metadata; labels and annotations merge
                    meta = new["metadata"]
                    for mkey in ("labels", "annotations"):
                        if mkey in value:
                            meta[mkey] = {**meta.get(mkey, {}), **value[mkey]}
                    if "ownerReferences" in value:
                        meta["ownerReferences"] = value["ownerReferences"]
                elif key != "status" or request.subresource == "status":
                    new[key] = copy.deepcopy(value)
        else:  # merge-patch+json, strategic-merge-patch+json (approximated as a merge patch)
            if not isinstance(data, Mapping):
                raise self._error(400, "BadRequest", "a merge patch must be a JSON object")
            wanted_rv = (data.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
                raise self._error(
                    409, "Conflict", "the object has been modified; please apply your changes to the latest version"
                )
            new = merge_patch(current, data)

        # The status subresource: each endpoint changes only its own half of the object.
        if request.subresource == "status":
            new = {**current, "status": new.get("status")} if "status" in new else dict(current, status=None)
            if new.get("status") is None:
                new.pop("status")
        elif self._has_status_subresource(resource):
            new = (
                {**new, "status": current.get("status")}
                if "status" in current
                else {k: v for k, v in new.items() if k != "status"}
            )

        # The server owns these fields, whatever the client sent.
        meta = dict(new.get("metadata") or {})
        for key in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
        meta["generation"] = current["metadata"].get("generation", 1) + (
            1 if _spec_part(new) != _spec_part(current) else 0
        )
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        new["metadata"] = meta

        if resource == CRDS and request.subresource is None:
            new = self._establish(new)
        namespace, name = request.namespace, request.name
        assert name is not None
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return await self._remove(resource, namespace, name, new)
        self._store(resource, namespace, name, new)
        await self._emit(resource, "MODIFIED", new)
        return new

    async def _delete(
        self, resource: kmock.resource, namespace: str | None, name: str, current: dict[str, Any]
    ) -> dict[str, Any]:
        if current["metadata"].get("deletionTimestamp"):
            return current
        if current["metadata"].get("finalizers"):
            self._rv += 1
            now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            new = {**current, "metadata": {**current["metadata"], "deletionTimestamp": now}}
            new["metadata"]["resourceVersion"] = str(self._rv)
            self._store(resource, namespace, name, new)
            await self._emit(resource, "MODIFIED", new)
            return new
        return await self._remove(resource, namespace, name, current)

    async def _remove(
        self, resource: kmock.resource, namespace: str | None, name: str, last: dict[str, Any]
    ) -> dict[str, Any]:
        self._rv += 1
        last = {**last, "metadata": {**last["metadata"], "resourceVersion": str(self._rv)}}
        self.objects._objects[resource, namespace, name].delete()
        await self._emit(resource, "DELETED", last)
        self._gone_uids.add(last["metadata"]["uid"])
        await self._collect_garbage(last["metadata"]["uid"])
        return last

    async def _collect_garbage(self, owner_uid: str) -> None:
        """The emulated garbage collector: background-delete every dependent of a deleted owner."""
        dependents = [
            (resource, namespace, name, obj.raw)
            for (resource, namespace, name), obj in list(self.objects._objects.items())
            if not obj.deleted
            for ref in obj.raw.get("metadata", {}).get("ownerReferences", [])
            if ref.get("uid") == owner_uid
        ]
        for resource, namespace, name, body in dependents:
            if self._get(resource, namespace, name) is not None:
                await self._delete(resource, namespace, name, body)

    # --- reads --------------------------------------------------------------------------------------------

    def _visible(self, request: rendering.Request) -> list[dict[str, Any]]:
        selector = request.params.get("labelSelector")
        return [
            obj.raw
            for (resource, namespace, name), obj in self.objects._objects.items()
            if resource == request.resource
            and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
            and matches_selector(obj.raw.get("metadata", {}).get("labels") or {}, selector)
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        try:
            self.resources[request.resource]
        except KeyError:
            raise kmock.KubernetesResourceNotFoundError() from None
        items = self._visible(request)
        return {
            "apiVersion": f"{request.resource.group}/{request.resource.version}".lstrip("/"),
            "kind": f"{self._kind(request.resource)}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None and request.name is not None
        obj = self._get(request.resource, request.namespace, request.name)
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        return obj

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now, even if nothing happens for a while
        assert request.resource is not None
        res_key = (request.resource.group, request.resource.version, request.resource.plural)
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        epoch = self._watch_epoch
        since = request.params.get("resourceVersion")
        selector = request.params.get("labelSelector")
        if since in (None, "", "0"):
            for obj in self._visible(request):
                yield {"type": "ADDED", "object": obj}
            cursor = len(self._log)
        else:
            cursor = bisect.bisect_right(self._log, int(since), key=lambda entry: entry[0])

        if self._changed is None:
            self._changed = asyncio.Condition()
        while True:
            while cursor < len(self._log):
                _, key, kind, obj = self._log[cursor]
                cursor += 1
                if key != res_key:
                    continue
                meta = obj.get("metadata", {})
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if not matches_selector(meta.get("labels") or {}, selector):
                    continue
                yield {"type": kind, "object": obj}
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if self._closing or epoch != self._watch_epoch or (remaining is not None and remaining <= 0):
                return
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except TimeoutError:
                    return

    # --- dispatch -----------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock 0.8 cannot parse the Namespace resource's own URLs (`/api/v1/namespaces[/name]`: it takes the
        word for the namespace prefix of a namespaced URL); parse those here, leave all others to kmock."""
        match = NAMESPACE_URL.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        await raw_request.read()
        try:
            try:
                data = await raw_request.json()
            except ValueError:
                data = None
            method = enums.method(raw_request.method)
            name = match.group("name")
            query = dict(raw_request.query)
            action = parsing.guess_k8s(parsing.ParsedPath("", "v1", "namespaces", None, name), method, query)
            request = rendering.Request(
                id=len(self._requests),
                raw_request=raw_request,
                url=raw_request.url,
                method=raw_request.method,
                params=query,
                headers=dict(raw_request.headers),
                data=data,
                body=await raw_request.read(),
                action=action,
                resource=kmock.resource("", "v1", "namespaces"),
                namespace=None,
                name=name,
                subresource=match.group("sub"),
            )
            self._requests.append(request)
            return await self._handle(request)
        except Exception as e:
            return await self._render_error(e)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.action in (
            enums.action.CREATE,
            enums.action.UPDATE,
            enums.action.DELETE,
        ):
            body = await self._write(request)
            if body is not None:
                status = 201 if request.action == enums.action.CREATE else 200
                return aiohttp.web.json_response(body, status=status)
        if self.direct_reads and request.resource is not None and request.resource.plural:
            if request.action == enums.action.FETCH:
                return aiohttp.web.json_response(await self._serve_fetch(request))
            if request.action == enums.action.LIST:
                return aiohttp.web.json_response(await self._serve_list(request))
            if request.action == enums.action.WATCH:
                return await self._stream(request)
        # Anything else: kmock's reactions first (tests may inject them), then its fallbacks (discovery etc.).
        return await apps.RawHandler._handle(self, request)

    async def _stream(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """Serve a watch as JSON lines (what kmock's rendering does, without its per-request matching)."""
        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        try:
            async for item in self._serve_watch(request):
                if isinstance(item, dict):
                    await response.write(json.dumps(item).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response


class EmulatedCluster:
    """A `RealisticEmulator` served over HTTP on loopback from its own thread and event loop.

    `start()` declares the built-in resources and the CRDs, creates the `default` namespace and writes a
    kubeconfig (no auth: plain http to 127.0.0.1) for the operator and the tests' client.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.emulator = RealisticEmulator()
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kmock-emulator", daemon=True)
        self._server: kmock.Server | None = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine in the emulator's loop (thread-safe) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> EmulatedCluster:
        self._thread.start()
        self.call(self._astart())
        return self

    async def _astart(self) -> None:
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")
        self.emulator.declare_builtins()
        self.emulator.declare_crds()
        await self.emulator._create(kmock.resource("", "v1", "namespaces"), None, {"metadata": {"name": "default"}})
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "kmock", "user": {"token": "kmock"}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                    "current-context": "kmock",
                }
            )
        )

    def create_namespace(self, name: str) -> None:
        namespaces = kmock.resource("", "v1", "namespaces")
        self.call(self.emulator._create(namespaces, None, {"metadata": {"name": name}}))

    def stop(self) -> None:
        async def _astop() -> None:
            await self.emulator.close_watches()
            if self._server is not None:
                await self._server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(_astop(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> EmulatedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
