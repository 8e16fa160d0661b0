"""What an alert is (its key and severity) and the timers that decide when it is mailed, from the operator's
settings. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from korall_operator.settings import OperatorSettings

SEVERITIES = ("critical", "warning", "info")
"""Severities that mail, most urgent first; `none` (a setting) turns a reason's alerts off."""

NOT_READY = "NotReady"
"""Reason of the alert for a resource that has not been Ready for `not_ready_after_s`, without a Degraded reason."""


@dataclass(frozen=True, order=True)
class AlertKey:
    """One alert: a reason of one resource. `str()` is its stable identity (persisted, and in the mail)."""

    namespace: str
    kind: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}/{self.reason}"

    @classmethod
    def parse(cls, text: str) -> AlertKey:
        namespace, kind, name, reason = text.split("/")
        return cls(namespace, kind, name, reason)

    @property
    def parent(self) -> tuple[str, str, str]:
        """(kind, namespace, name) of the resource."""
        return self.kind, self.namespace, self.name


@dataclass(frozen=True)
class Firing:
    """An alert as the rules see it now: it fires, with this message, since this time (epoch seconds)."""

    key: AlertKey
    severity: str
    message: str
    since: float


@dataclass(frozen=True)
class Policy:
    severities: Mapping[str, str] = field(default_factory=dict)
    default_severity: str = "warning"
    not_ready_after_s: float = 300.0
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 14400.0
    digest_after: int = 10

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> Policy:
        return cls(
            severities=dict(settings.alerts_severities),
            default_severity=settings.alerts_default_severity,
            not_ready_after_s=settings.alerts_not_ready_after_s,
            group_wait_s=settings.alerts_group_wait_s,
            group_interval_s=settings.alerts_group_interval_s,
            repeat_interval_s=settings.alerts_repeat_interval_s,
            digest_after=settings.alerts_digest_after,
        )

    def severity_of(self, reason: str) -> str | None:
        """The severity of a reason's alerts, or None when that reason is not alerted on (`none`)."""
        severity = self.severities.get(reason, self.default_severity)
        return severity if severity in SEVERITIES else None
