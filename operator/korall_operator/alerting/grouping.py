"""The grouping state machine: which alerts go out in which mail, and when. Pure: time is passed in, no I/O.

Alertmanager's semantics, with one group per severity (each severity has its own recipients):

- `group_wait`: a change (an alert that starts firing, or a mailed alert that resolves) waits this long for others
  to happen with it, so that what fails together goes out in one mail;
- `group_interval`: at least this long between two mails of one group;
- `repeat_interval`: a group that still fires, with nothing new, is mailed again after this long;
- every mail of a group lists all its firing alerts and the ones resolved since its last mail; an alert that
  resolves before any mail said it fired is never mailed (a flap shorter than group_wait is not news), and one
  that fires again before its resolution went out was, for the mail, never resolved;
- a group whose alerts have all resolved, and been mailed so, ends: the next alert starts a new one.

What must survive a restart is what was mailed (`snapshot()` / `restore()`): the alerts a mail said fire, and each
group's last mail. Whatever has not been mailed yet is found again in the resources' conditions by the rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from korall_operator.alerting.policy import SEVERITIES, AlertKey, Firing, Policy

STATE_VERSION = 1
MAX_PERSISTED_ALERTS = 5000
"""The mailed alerts a snapshot keeps (a ConfigMap holds 1 MiB; a record is under 200 bytes)."""
MAX_PERSISTED_MESSAGE = 300


@dataclass
class Alert:
    key: AlertKey
    severity: str
    message: str
    starts_at: float  # since when it fires (for the mail)
    changed_at: float  # when its change not mailed yet happened: it began to fire, or it resolved
    resolved_at: float | None = None
    notified: bool = False  # a delivered mail said it fires

    @property
    def firing(self) -> bool:
        return self.resolved_at is None

    @property
    def pending(self) -> bool:
        """A change no mail has told yet: it fires and was not mailed, or it was mailed and has resolved."""
        return self.firing != self.notified


@dataclass
class Group:
    severity: str
    alerts: dict[AlertKey, Alert] = field(default_factory=dict)
    last_sent_at: float | None = None


@dataclass(frozen=True)
class Notification:
    """One mail: every alert of the group that fires (the new ones first), and those resolved since the last."""

    group: str
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    new: frozenset[AlertKey]
    repeat: bool
    previous_sent_at: float | None

    @property
    def id(self) -> str:
        """The same for the same mail, also in another operator process: if the operator stops after the server
        took a mail and before it recorded so, the mail sent again carries the same Message-ID."""
        parts = [self.group, repr(self.previous_sent_at)]
        parts += [f"F {a.key} {a.starts_at!r}" for a in sorted(self.firing, key=lambda a: a.key)]
        parts += [f"R {a.key} {a.starts_at!r}" for a in sorted(self.resolved, key=lambda a: a.key)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class Engine:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.groups: dict[str, Group] = {}

    # ------------------------------------------------------------------------------------------- what fires

    def observe(self, firing: Iterable[Firing], now: float, known: Callable[[AlertKey], bool] = lambda _: True) -> None:
        """`firing`: every alert that fires now. One that no longer does resolves; a mailed one only if `known(key)`
        (its resource is known: the indexes are still filling just after a start, and a mail must not say resolved
        for what is only not listed yet). One never mailed just goes: there is nothing to take back."""
        current = {f.key: f for f in firing}
        for f in current.values():
            found = self._find(f.key)
            if found is None:
                group = self.groups.setdefault(f.severity, Group(f.severity))
                group.alerts[f.key] = Alert(f.key, f.severity, f.message, min(f.since, now), now)
                continue
            alert = found[1]
            alert.message = f.message
            if not alert.firing:  # fires again before its resolution went out: the mail never hears of it
                alert.resolved_at = None
                alert.changed_at = now
        for severity, group in list(self.groups.items()):
            for key, alert in list(group.alerts.items()):
                if key in current or not alert.firing or (alert.notified and not known(key)):
                    continue
                if alert.notified:
                    alert.resolved_at = alert.changed_at = now
                else:  # resolved before any mail said it fired: nothing to tell
                    del group.alerts[key]
            if not group.alerts:
                del self.groups[severity]

    def _find(self, key: AlertKey) -> tuple[Group, Alert] | None:
        for group in self.groups.values():
            alert = group.alerts.get(key)
            if alert is not None:
                return group, alert
        return None

    def alerts(self) -> Iterator[Alert]:
        for group in self.groups.values():
            yield from group.alerts.values()

    def firing_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for alert in self.alerts():
            if alert.firing:
                counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return counts

    # ------------------------------------------------------------------------------------------- what to send

    def due_at(self, group: Group) -> tuple[float | None, bool]:
        """(when the group's next mail is due, whether it is a repeat); (None, False) when nothing is to be sent."""
        pending = [a.changed_at for a in group.alerts.values() if a.pending]
        if pending:
            when = min(pending) + self.policy.group_wait_s
            if group.last_sent_at is not None:
                when = max(when, group.last_sent_at + self.policy.group_interval_s)
            return when, False
        if group.last_sent_at is not None and any(a.firing for a in group.alerts.values()):
            return group.last_sent_at + self.policy.repeat_interval_s, True
        return None, False

    def next_due(self) -> float | None:
        times = [when for g in self.groups.values() if (when := self.due_at(g)[0]) is not None]
        return min(times) if times else None

    def due(self, now: float) -> list[Notification]:
        out = []
        for group in self.groups.values():
            when, repeat = self.due_at(group)
            if when is not None and now >= when:
                out.append(self._notification(group, repeat))
        return out

    def _notification(self, group: Group, repeat: bool) -> Notification:
        alerts = list(group.alerts.values())
        new = [a for a in alerts if a.firing and not a.notified]
        old = [a for a in alerts if a.firing and a.notified]
        firing = sorted(new, key=lambda a: (a.starts_at, a.key)) + sorted(old, key=lambda a: (a.starts_at, a.key))
        resolved = sorted((a for a in alerts if not a.firing and a.notified), key=lambda a: (a.resolved_at, a.key))
        return Notification(
            group=group.severity,
            firing=tuple(dataclasses.replace(a) for a in firing),
            resolved=tuple(dataclasses.replace(a) for a in resolved),
            new=frozenset(a.key for a in new),
            repeat=repeat,
            previous_sent_at=group.last_sent_at,
        )

    def delivered(self, notification: Notification, now: float) -> None:
        """The mail went out: what it said fires is mailed, what it said resolved is done."""
        group = self.groups.get(notification.group)
        if group is None:
            return
        for sent in notification.firing:
            alert = group.alerts.get(sent.key)
            if alert is not None and alert.firing:
                alert.notified = True
        for sent in notification.resolved:
            alert = group.alerts.get(sent.key)
            if alert is not None and not alert.firing:
                del group.alerts[sent.key]
        group.last_sent_at = now
        if not group.alerts:
            del self.groups[notification.group]

    # ------------------------------------------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, Any]:
        """What a restart must know (JSON-ready): each group's last mail and the alerts mails said fire."""
        groups: dict[str, Any] = {}
        kept = 0
        for severity, group in sorted(self.groups.items()):
            mailed = []
            for alert in sorted(group.alerts.values(), key=lambda a: a.key):
                if alert.notified and kept < MAX_PERSISTED_ALERTS:
                    kept += 1
                    record: dict[str, Any] = {
                        "key": str(alert.key),
                        "message": alert.message[:MAX_PERSISTED_MESSAGE],
                        "startsAt": alert.starts_at,
                    }
                    if alert.resolved_at is not None:
                        record["resolvedAt"] = alert.resolved_at
                    mailed.append(record)
            if group.last_sent_at is not None or mailed:
                groups[severity] = {"lastSentAt": group.last_sent_at, "alerts": mailed}
        return {"version": STATE_VERSION, "groups": groups}

    def restore(self, data: dict[str, Any]) -> int:
        """Take back a snapshot (over an empty engine); returns how many mailed alerts it held. Raises ValueError
        on a snapshot this version cannot read."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        count = 0
        for severity, entry in (data.get("groups") or {}).items():
            group = Group(str(severity), last_sent_at=_number(entry.get("lastSentAt")))
            for record in entry.get("alerts") or []:
                key = AlertKey.parse(str(record["key"]))
                starts = float(record["startsAt"])
                resolved = _number(record.get("resolvedAt"))
                group.alerts[key] = Alert(
                    key, group.severity, str(record.get("message", "")), starts, resolved or starts, resolved, True
                )
                count += 1
            self.groups[group.severity] = group
        return count


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
