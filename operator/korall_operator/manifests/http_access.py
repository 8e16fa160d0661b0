"""What a workload pod gets for its HTTP side (issue 15): the token Secret, the HTTP limits, its memory limit, a camera
source from a Secret. Pure functions that the vision and audio builders call; they return env entries, volumes and
mounts to add.

- The token Secret (the CR's `spec.auth.tokenSecretRef`, else the chart's `workloads.apiTokens.secret`) is mounted
  as a volume, not passed as a variable: the kubelet updates a mounted Secret in place, and the service re-reads it,
  so a token rotates without a rollout. `optional: true`: a pod whose Secret does not exist yet starts, serves
  /health and /ready, and answers 401 elsewhere until it does (fail closed), instead of waiting in
  ContainerCreating. The operator never reads the Secret (no RBAC for Secrets): the kubelet does.
- MEMORY_LIMIT_BYTES comes from the container's own `limits.memory` through the Downward API: the vision service
  checks the worst case of its limits against it at start.
- A camera URL with credentials comes from a Secret key (`video.sourceSecretRef`) through `secretKeyRef`: it never
  appears in the CR, the Deployment or `kubectl describe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from korall_contract import API_TOKENS_SECRET_KEY, HttpEnv, VisionEnv

from korall_operator.settings import OperatorSettings
from korall_operator.specs import AuthSpec, SecretKeyRef

TOKENS_DIR_IN_POD = "/var/run/korall/api-tokens"
TOKENS_VOLUME = "api-tokens"


@dataclass
class PodParts:
    """Env entries (whole Kubernetes EnvVar objects), volumes and volume mounts to add to a workload pod."""

    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def token_secret(auth: AuthSpec | None, settings: OperatorSettings) -> str | None:
    """The token Secret a CR's pods mount: the CR's own, else the chart's default (None: no auth)."""
    if auth is not None and auth.token_secret_ref is not None:
        return auth.token_secret_ref.name
    return settings.api_token_secret or None


def http_access(auth: AuthSpec | None, settings: OperatorSettings) -> PodParts:
    """The token Secret mounted and named to the service, and the chart's HTTP settings as its environment."""
    parts = PodParts(
        env=[
            {"name": HttpEnv.AUTH_METRICS, "value": "true" if settings.metrics_need_token else "false"},
            {"name": HttpEnv.RATE_LIMIT_PER_CLIENT, "value": settings.rate_limit_per_client},
            {"name": HttpEnv.RATE_LIMIT_PER_TOKEN, "value": settings.rate_limit_per_token},
        ]
    )
    secret = token_secret(auth, settings)
    if secret is not None:
        parts.env.append({"name": HttpEnv.AUTH_TOKENS_FILE, "value": f"{TOKENS_DIR_IN_POD}/{API_TOKENS_SECRET_KEY}"})
        parts.volumes.append({"name": TOKENS_VOLUME, "secret": {"secretName": secret, "optional": True}})
        parts.mounts.append({"name": TOKENS_VOLUME, "mountPath": TOKENS_DIR_IN_POD, "readOnly": True})
    return parts


def memory_limit_env(container: str) -> dict[str, Any]:
    """MEMORY_LIMIT_BYTES from the container's limits.memory (the node's allocatable memory when it has none)."""
    return {
        "name": VisionEnv.MEMORY_LIMIT_BYTES,
        "valueFrom": {"resourceFieldRef": {"containerName": container, "resource": "limits.memory"}},
    }


def secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    """A variable whose value the kubelet takes from a Secret key (a camera URL with credentials)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
