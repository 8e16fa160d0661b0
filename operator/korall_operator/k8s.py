"""The only module that talks to the Kubernetes API for objects other than the one a kopf handler is serving.

kopf already reads, watches and patches the CR a handler runs for (its `patch` kwarg). Everything else goes
through here: applying the child Deployments and Services, writing a parent's status conditionally (after a
reconcile or a Deployment event), and poking InferenceModels when their CaptureProfile appears or changes.

Why kubernetes_asyncio rather than kopf's internal client: kopf's API calls live in the private
`kopf._cogs.clients` package, which may change in any release. kubernetes_asyncio is a pinned, public async
client that loads the same credentials as kopf (the pod's service account in a cluster, else `$KUBECONFIG`). We
use only its transport (auth, TLS, retries of the connection) with plain dicts and paths, not its generated
models: manifests are dicts already, and skipping the models keeps the operator lean (see the RSS bench).

Children are written with server-side apply (`fieldManager=korall-operator`, `force=true`): one idempotent
PATCH creates or updates, and fields the operator stops setting are removed, with no read-modify-write race.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Self

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

FIELD_MANAGER = "korall-operator"
_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

__all__ = [
    "FIELD_MANAGER",
    "ApiException",
    "Conflict",
    "KubeClient",
    "NotFound",
    "namespace_terminating",
    "uses_service_account",
]


class NotFound(ApiException):
    """The object does not exist (HTTP 404). An ApiException, so a caller that does not expect it maps it like any
    other API failure."""


class Conflict(ApiException):
    """The object changed since it was read (HTTP 409): read it again and retry. An ApiException, like NotFound."""


def resource_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of a resource (collection when `name` is None), e.g. /apis/apps/v1/namespaces/ns/deployments."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


def namespace_terminating(exc: ApiException) -> bool:
    """A 403 because the namespace is being deleted (the API server's `NamespaceTerminating` cause)."""
    if exc.status != 403:
        return False
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return False
    causes = ((body.get("details") or {}).get("causes") or []) if isinstance(body, dict) else []
    return any(c.get("reason") == "NamespaceTerminating" for c in causes if isinstance(c, dict))


def uses_service_account() -> bool:
    """An explicit `$KUBECONFIG` wins (tests and tools, even inside a pod); else the pod's service account when
    running in a cluster; else ~/.kube/config. kopf's login (handlers/lifecycle.py) follows the same decision."""
    if os.environ.get("KUBECONFIG"):
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(_SERVICE_ACCOUNT_TOKEN)


_PLURALS = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps"}


class KubeClient:
    """A thin async client over kubernetes_asyncio's transport, speaking plain dicts."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    async def from_environment(cls) -> Self:
        """Credentials as `uses_service_account()` decides (the same decision as the operator's kopf login)."""
        configuration = client.Configuration()
        if uses_service_account():
            config.load_incluster_config(client_configuration=configuration)
        else:
            # Read $KUBECONFIG now: kubernetes_asyncio's own default is frozen when it is first imported.
            paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            await config.load_kube_config(config_file=paths[0] if paths else None, client_configuration=configuration)
        return cls(client.ApiClient(configuration=configuration))

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object"},
                _return_http_data_only=True,
            )
        except ApiException as e:
            if e.status == 404:
                raise NotFound(404, f"{method} {path}: not found") from e
            if e.status == 409:
                raise Conflict(409, f"{method} {path}: conflict") from e
            raise
        return dict(result or {})

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
