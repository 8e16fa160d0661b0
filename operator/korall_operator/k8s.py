"""The only module that talks to the Kubernetes API for objects other than the one a kopf handler is serving.

kopf already reads, watches and patches the CR a handler runs for (its `patch` kwarg). Everything else goes
through here: applying the child Deployments and Services, writing a parent's status conditionally, poking
InferenceModels when their CaptureProfile appears or changes, posting Events.

Plain aiohttp (which kopf itself runs on) with the credentials of kopf's own login functions: the pod's service
account in a cluster, else `$KUBECONFIG`. No Kubernetes client library: manifests are dicts already, and the
generated client of kubernetes_asyncio costs the operator about 45 MB of memory just to import (kopf imports it
too when it is installed), a third of the operator's memory budget (see bench/bench_operator.py).

Children are written with server-side apply (`fieldManager=korall-operator`, `force=true`): one idempotent
PATCH creates or updates, and fields the operator stops setting are removed, with no read-modify-write race.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import aiohttp
import kopf

FIELD_MANAGER = "korall-operator"
_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

__all__ = [
    "FIELD_MANAGER",
    "ApiError",
    "Conflict",
    "KubeClient",
    "NotFound",
    "namespace_terminating",
    "uses_service_account",
]


class ApiError(Exception):
    """The API server answered with an error status. `body` is its Status object as text (may be empty)."""

    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        super().__init__(f"HTTP {status}: {reason}" if reason else f"HTTP {status}")
        self.status = status
        self.reason = reason
        self.body = body


class NotFound(ApiError):
    """The object does not exist (HTTP 404)."""


class Conflict(ApiError):
    """The object changed since it was read, or already exists (HTTP 409): read it again and retry."""


def namespace_terminating(exc: ApiError) -> bool:
    """A 403 because the namespace is being deleted (the API server's `NamespaceTerminating` cause)."""
    if exc.status != 403:
        return False
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return False
    causes = ((body.get("details") or {}).get("causes") or []) if isinstance(body, dict) else []
    return any(c.get("reason") == "NamespaceTerminating" for c in causes if isinstance(c, dict))


def resource_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of a resource (collection when `name` is None), e.g. /apis/apps/v1/namespaces/ns/deployments."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


def uses_service_account() -> bool:
    """An explicit `$KUBECONFIG` wins (tests and tools, even inside a pod); else the pod's service account when
    running in a cluster; else ~/.kube/config. kopf's login (handlers/lifecycle.py) follows the same decision."""
    if os.environ.get("KUBECONFIG"):
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(_SERVICE_ACCOUNT_TOKEN)


def login() -> kopf.ConnectionInfo:
    """The credentials, read now, by kopf's own login functions (as the operator's kopf login does)."""
    settings = kopf.OperatorSettings()
    info = (
        kopf.login_with_service_account(settings=settings)
        if uses_service_account()
        else kopf.login_with_kubeconfig(settings=settings)
    )
    if info is None:
        raise kopf.LoginError("no credentials: neither a service account nor a kubeconfig")
    return info


def _material(path: Any, data: str | bytes | None, folder: Path, name: str) -> str | None:
    """A file path for a CA, certificate or key given as a path or as base64 data (ssl wants files)."""
    if path:
        return os.fspath(path)
    if not data:
        return None
    target = folder / name
    target.write_bytes(base64.b64decode(data))
    target.chmod(0o600)
    return str(target)


def _ssl_context(info: kopf.ConnectionInfo, folder: Path) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(cafile=_material(info.ca_path, info.ca_data, folder, "ca.crt"))
    cert = _material(info.certificate_path, info.certificate_data, folder, "client.crt")
    key = _material(info.private_key_path, info.private_key_data, folder, "client.key")
    if cert:
        context.load_cert_chain(cert, key)
    return context


_PLURALS = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps", "Secret": "secrets"}


class KubeClient:
    """A thin async client over aiohttp, speaking plain dicts."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self._info = info
        self._server = info.server.rstrip("/")
        self._folder = tempfile.TemporaryDirectory(prefix="korall-kube-")
        self._ssl = _ssl_context(info, Path(self._folder.name))
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def from_environment(cls) -> Self:
        """Credentials as `uses_service_account()` decides (the same decision as the operator's kopf login)."""
        return cls(login())

    def _headers(self) -> dict[str, str]:
        info = self._info
        if info.token:
            return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
        if info.username and info.password:
            basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=20)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._folder.cleanup()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        headers = {**self._headers(), "Accept": "application/json", "Content-Type": content_type}
        # UTF-8, not ASCII escapes: json.dumps would write a character outside the BMP (an emoji) as a surrogate
        # pair (\ud83c\udfa5), which the API server's YAML decoder (apply-patch+yaml) refuses outright.
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
        for attempt in range(2):
            async with self._http().request(
                method, self._server + path, params=query or None, data=data, headers=headers
            ) as response:
                text = await response.text()
                if response.status == 401 and attempt == 0 and uses_service_account():
                    # The kubelet rotates the projected token: read it again once, as kopf does on a 401.
                    self._info = login()
                    headers.update(self._headers())
                    continue
                if response.status >= 400:
                    error = {404: NotFound, 409: Conflict}.get(response.status, ApiError)
                    raise error(response.status, f"{method} {path}: {response.reason or ''}", text)
                return dict(json.loads(text)) if text else {}
        raise ApiError(401, f"{method} {path}: Unauthorized")

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return await self._call("GET", resource_path(api_version, plural, namespace, name))
        except NotFound:
            return None

    async def create(
        self, api_version: str, plural: str, namespace: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """POST a new object (409 Conflict if one of that name exists)."""
        return await self._call("POST", resource_path(api_version, plural, namespace), body=dict(body))

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a child manifest (creates it or makes it match); returns the object as stored."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], _PLURALS[manifest["kind"]], meta.get("namespace"), meta["name"])
        return await self._call(
            "PATCH",
            path,
            body=dict(manifest),
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    async def delete_owned(self, api_version: str, plural: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete the object if its controller is `owner_uid` (never someone else's); True if it was deleted.

        The precondition on the uid makes the delete refer to exactly the object that was read.
        """
        current = await self.get(api_version, plural, namespace, name)
        refs = ((current or {}).get("metadata") or {}).get("ownerReferences") or []
        if current is None or not any(r.get("controller") and r.get("uid") == owner_uid for r in refs):
            return False
        body = {"preconditions": {"uid": current["metadata"]["uid"]}, "propagationPolicy": "Background"}
        try:
            await self._call("DELETE", resource_path(api_version, plural, namespace, name), body=body)
        except NotFound:
            return False
        return True

    async def merge_patch(
        self, api_version: str, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of the object (metadata.resourceVersion in the patch makes it conditional)."""
        path = resource_path(api_version, plural, namespace, name)
        return await self._call("PATCH", path, body=dict(patch), content_type="application/merge-patch+json")

    async def merge_patch_status(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource; with `resource_version`, fails with Conflict if stale."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        path = resource_path(api_version, plural, namespace, name) + "/status"
        return await self._call("PATCH", path, body=body, content_type="application/merge-patch+json")
