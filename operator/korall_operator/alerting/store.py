"""What the alerting keeps outside the operator, through the one API client (k8s.py): the state ConfigMap and the
SMTP Secret, both in the release namespace and both named by the chart (RBAC grants exactly those two names).

The ConfigMap, not the resources' status: what was mailed belongs to a group of alerts (one mail, many resources)
and must be recorded in one write, all or nothing; it must outlive a deleted resource (whose resolution is still
to be mailed); and the status stays the resources' own, written by their handlers alone. The chart creates the
ConfigMap empty, so the operator needs neither `create` nor any other ConfigMap.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import aiohttp

from korall_operator.alerting.smtp import Credentials, MailError
from korall_operator.k8s import ApiError, KubeClient

STATE_KEY = "state.json"
logger = logging.getLogger("korall.alerts")


class StateStore:
    def __init__(self, kube: KubeClient, namespace: str, name: str) -> None:
        self._kube = kube
        self.namespace, self.name = namespace, name
        self.body: dict[str, Any] | None = None  # the ConfigMap as last read (its uid: Events about the alerting)

    def __str__(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    async def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none (or it cannot be read: logged, the alerting starts empty)."""
        try:
            self.body = await self._kube.get("v1", "configmaps", self.namespace, self.name)
        except (ApiError, aiohttp.ClientError) as e:
            logger.error(f"alert state not read from {self} ({e}): alerts mailed before this start may be mailed again")
            return None
        if self.body is None:
            logger.error(f"{self} is missing (the chart creates it): alerts will be mailed again after a restart")
            return None
        text = (self.body.get("data") or {}).get(STATE_KEY)
        if not text:
            return None
        try:
            state = json.loads(text)
        except ValueError as e:
            logger.error(f"alert state in {self} is not JSON ({e}); starting empty")
            return None
        return state if isinstance(state, dict) else None

    async def save(self, state: dict[str, Any]) -> None:
        """Record the state (raises ApiError or aiohttp.ClientError: the caller retries)."""
        text = json.dumps(state, separators=(",", ":"), sort_keys=True)
        patch = {"data": {STATE_KEY: text}}
        self.body = await self._kube.merge_patch("v1", "configmaps", self.namespace, self.name, patch)


async def read_credentials(kube: KubeClient, namespace: str, name: str) -> Credentials:
    """The SMTP login from Secret `name`: keys `username`, `password`, optionally `ca.crt`. No name: no login.
    Raises MailError("secret", ...) when the Secret cannot be read or lacks a key."""
    if not name:
        return Credentials()
    where = f"Secret {namespace}/{name}"
    try:
        secret = await kube.get("v1", "secrets", namespace, name)
    except ApiError as e:
        hint = " (RBAC: the chart grants `get` on the Secret named by alerts.smtp.secret)" if e.status == 403 else ""
        raise MailError("secret", f"cannot read {where}: HTTP {e.status}{hint}") from e
    except aiohttp.ClientError as e:
        raise MailError("connect", f"cannot read {where}: {type(e).__name__}") from e
    if secret is None:
        raise MailError("secret", f"{where} does not exist: create it with the keys username and password")
    data = secret.get("data") or {}
    values = {}
    for key in ("username", "password", "ca.crt"):
        if key in data:
            try:
                values[key] = base64.b64decode(data[key], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as e:
                raise MailError("secret", f"{where}: key {key} is not base64 of UTF-8 text") from e
    missing = [k for k in ("username", "password") if not values.get(k)]
    if missing:
        raise MailError("secret", f"{where} has no {' and no '.join(missing)}")
    return Credentials(values["username"], values["password"], values.get("ca.crt"))
