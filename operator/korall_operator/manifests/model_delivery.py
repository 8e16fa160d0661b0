"""A model downloaded on the node before the vision service starts: the init container, the cache and the link.

For `model.url` and `model.s3` the vision pod gets an init container from the vision image that runs
`python -m korall_workloads.fetch`: it streams the file into a node-local, content-addressed cache
(`<cache>/sha256/<hex>`), verifies the sha256 while streaming, resumes with Range requests, and ends with a
one-line termination message (`ModelDownloadFailed: <Reason>: ...`) that the operator turns into a condition
(observed.pod_problem). The vision container then loads `<cache>/sha256/<hex>` read-only and checks the sha256
again. Pure: see docs/model-delivery.md.

Where the link comes from:
- `model.s3`: the operator signs a short-lived GET link and writes it into the model's link Secret
  (`<name>-model-link`, key `url`); the pod mounts that Secret. The pod template names the Secret, not the link,
  so re-signing (handlers/model_links.py) never rolls the pod out, and a pod that starts an hour later reads the
  current link. The S3 credentials never reach the pod.
- `model.url`: the URL is in the template (it is not secret); an optional auth header comes from a Secret key of
  the model's namespace, mounted as a file (the operator never reads it).

The cache is a hostPath (`settings.model_cache_host_path`, default /var/lib/korall/models): one download per node
and model, kept within a budget by the downloaders, which never remove a model a process holds. A serving pod
holds its model with a native sidecar (`model-hold`, after the download) for its whole life, so a restart of the
vision container never leaves the model unheld. The kubelet creates the cache folder owned by root, so the
download runs as uid 0 with every capability dropped (the owner may write; nothing else); with the cache disabled
(an emptyDir, the pod's own) it runs as the pod's user, and no sidecar is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from korall_contract import DEFAULT_MODEL_CACHE_DIR, FETCH_MODULE, MODEL_HOLD_MODULE, FetchEnv, VisionEnv

from korall_operator.manifests.naming import child_name
from korall_operator.manifests.pod import env_list
from korall_operator.settings import OperatorSettings
from korall_operator.specs import InferenceModelSpec

FETCH_CONTAINER = "model-fetch"
HOLD_CONTAINER = "model-hold"
LINK_KEY = "url"
# On the link Secret, for people (the operator writes them, never reads them): what its link is signed for, until when.
LINK_OBJECT_ANNOTATION = "korall.io/link-object"
LINK_CREDENTIALS_ANNOTATION = "korall.io/link-credentials"
LINK_EXPIRES_ANNOTATION = "korall.io/link-expires-at"
LINK_DIR = "/var/run/korall/model-link"
HEADERS_DIR = "/var/run/korall/model-headers"
HEADERS_FILE = "headers"


@dataclass(frozen=True)
class ModelDelivery:
    """What the vision Deployment gets for a downloaded model."""

    init_containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]  # of the vision container
    env: dict[str, Any] = field(default_factory=dict)  # of the vision container
    # Native sidecars of a serving pod (after init_containers): the hold of the model in a node cache. A Job's pod
    # runs once and never restarts a container, so validation Jobs take init_containers only.
    sidecars: list[dict[str, Any]] = field(default_factory=list)


def link_secret_name(name: str) -> str:
    """The Secret that holds an s3 model's presigned link (owned by the InferenceModel)."""
    return child_name(name, "model-link")


def cached_model_path(sha256: str) -> str:
    return f"{DEFAULT_MODEL_CACHE_DIR}/sha256/{sha256}"


def model_delivery(
    name: str, model: InferenceModelSpec, settings: OperatorSettings, link_secret: str | None = None
) -> ModelDelivery | None:
    """The init container, volumes and variables of a downloaded model; None for a model bundled in the image.
    `link_secret`: where an s3 model's link is, when not the model's own link Secret (a validation Job's)."""
    source = model.model
    if not source.remote:
        return None
    assert source.sha256 is not None  # required for url and s3 (schema and spec model)
    cache_volume: dict[str, Any] = {"name": "model-cache"}
    if settings.model_cache_host_path:
        cache_volume["hostPath"] = {"path": settings.model_cache_host_path, "type": "DirectoryOrCreate"}
    else:
        cache_volume["emptyDir"] = {}
    volumes = [cache_volume]
    fetch_mounts: list[dict[str, Any]] = [{"name": "model-cache", "mountPath": DEFAULT_MODEL_CACHE_DIR}]
    env: dict[str, Any] = {
        FetchEnv.MODEL_SHA256: source.sha256,
        FetchEnv.MODEL_CACHE_DIR: DEFAULT_MODEL_CACHE_DIR,
        FetchEnv.MODEL_MAX_BYTES: settings.model_max_bytes,
        FetchEnv.MODEL_CACHE_MAX_BYTES: settings.model_cache_max_bytes,
        FetchEnv.MODEL_CACHE_KEEP_S: settings.model_cache_keep_s,
        FetchEnv.LOG_JSON: settings.log_json,
    }
    if source.s3 is not None:
        secret = {"secretName": link_secret or link_secret_name(name), "defaultMode": 0o440}
        volumes.append({"name": "model-link", "secret": secret})
        fetch_mounts.append({"name": "model-link", "mountPath": LINK_DIR, "readOnly": True})
        env[FetchEnv.MODEL_URL_FILE] = f"{LINK_DIR}/{LINK_KEY}"
    else:
        env[FetchEnv.MODEL_URL] = source.url
        if source.auth_header_secret is not None:
            ref = source.auth_header_secret
            items = [{"key": ref.key, "path": HEADERS_FILE}]
            volumes.append(
                {"name": "model-headers", "secret": {"secretName": ref.name, "items": items, "defaultMode": 0o440}}
            )
            fetch_mounts.append({"name": "model-headers", "mountPath": HEADERS_DIR, "readOnly": True})
            env[FetchEnv.MODEL_HEADERS_FILE] = f"{HEADERS_DIR}/{HEADERS_FILE}"
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    if settings.model_cache_host_path:  # root-owned node folder: uid 0, but no capability at all
        security.update(runAsUser=0, runAsNonRoot=False)
    init = {
        "name": FETCH_CONTAINER,
        "image": settings.vision_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", FETCH_MODULE],
        "env": env_list(env),
        "volumeMounts": fetch_mounts,
        "securityContext": security,
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    cache_mount = {"name": "model-cache", "mountPath": DEFAULT_MODEL_CACHE_DIR, "readOnly": True}
    return ModelDelivery(
        init_containers=[init],
        volumes=volumes,
        mounts=[cache_mount],
        env={VisionEnv.MODEL_PATH: cached_model_path(source.sha256), VisionEnv.MODEL_SHA256: source.sha256},
        sidecars=[_hold_sidecar(source.sha256, cache_mount, settings)] if settings.model_cache_host_path else [],
    )


def _hold_sidecar(sha256: str, cache_mount: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The native sidecar that holds the model in the node's cache for the pod's life (korall_workloads.fetch.hold):
    the vision container holds it only while it runs, so without this a collection by another pod's downloader
    could remove it while that container restarts. Only for a node cache: an emptyDir is the pod's own."""
    return {
        "name": HOLD_CONTAINER,
        "image": settings.vision_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", MODEL_HOLD_MODULE],
        "restartPolicy": "Always",  # a sidecar: runs beside the vision container until the pod ends
        "env": env_list({FetchEnv.MODEL_SHA256: sha256, FetchEnv.MODEL_CACHE_DIR: DEFAULT_MODEL_CACHE_DIR}),
        "volumeMounts": [dict(cache_mount)],
        "securityContext": {  # the pod's user: reading the lock file is all it does
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
    }
