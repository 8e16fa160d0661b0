"""Which alerts a resource fires, read from the status the operator wrote (pure; the time is passed in).

- `Degraded` True fires an alert named by its reason (CrashLoopBackOff, ImagePullBackOff, Unschedulable,
  CameraUnavailable, ProgressDeadlineExceeded, a spec the operator refuses, ModelDownloadFailed ...), at once:
  the condition already says that something failed;
- `Ready` False for `not_ready_after_s`, without a Degraded reason, fires `NotReady`: pods that neither run
  nor fail (a rollout stuck before its progress deadline, a replaced pod stuck in ContainerCreating);
- a resource being deleted fires nothing: its alerts resolve.

A resource that has no status yet (never reconciled) fires nothing: there is nothing known to alert on.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Protocol

from korall_operator.alerting.policy import NOT_READY, AlertKey, Firing, Policy
from korall_operator.status import DEGRADED, NO_WORKLOAD, READY


class Resource(Protocol):
    """What the rules read of a resource (handlers/indexes.ParentView has it)."""

    @property
    def kind(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> Mapping[str, Any]: ...
    @property
    def deleting(self) -> bool: ...


def epoch(value: Any, default: float) -> float:
    """An API timestamp (`2024-01-01T10:00:00Z`) as epoch seconds; `default` when missing or unreadable."""
    if not isinstance(value, str) or not value:
        return default
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def firing_of(resource: Resource, now: float, policy: Policy) -> list[Firing]:
    """The alerts this resource fires at `now`."""
    if resource.deleting:
        return []
    conditions = {c.get("type"): c for c in resource.status.get("conditions") or [] if isinstance(c, Mapping)}
    degraded, ready = conditions.get(DEGRADED) or {}, conditions.get(READY) or {}
    found: list[tuple[str, str, float]] = []
    if degraded.get("status") == "True":
        found.append((str(degraded.get("reason") or "Degraded"), str(degraded.get("message") or ""), 0.0))
    elif ready.get("status") == "False" and ready.get("reason") != NO_WORKLOAD:
        since = epoch(ready.get("lastTransitionTime"), now)
        if now - since >= policy.not_ready_after_s:
            detail = f"{ready.get('reason')}: {ready.get('message')}" if ready.get("message") else ready.get("reason")
            found.append((NOT_READY, f"not Ready since {ready.get('lastTransitionTime')} ({detail})", since))
    out = []
    for reason, message, since in found:
        severity = policy.severity_of(reason)
        if severity is None:
            continue
        key = AlertKey(resource.namespace, resource.kind, resource.name, reason)
        started = since or epoch(degraded.get("lastTransitionTime"), now)
        out.append(Firing(key, severity, message, min(started, now)))
    return out
