"""A notification as an e-mail (pure): a subject that says what and how many, a plain-text body a person on call
reads on a phone, and a Message-ID that is the same if the same mail is ever sent twice.

    Subject: [korall edge-eu] FIRING critical: CameraUnavailable on InferenceModel shop/front-door

    1 alert FIRING (severity critical) on edge-eu.

    FIRING
    - CameraUnavailable: InferenceModel shop/front-door, since 2025-06-01 10:02:11 UTC
      pod front-door-vision-5d8f-x2x: the camera stopped streaming (not ready since ...)
      kubectl -n shop describe inferencemodel front-door

More alerts than `digest_after` make a digest: the first ones in full (new ones first), then one line per reason
with its count, and the names of the rest.
"""

from __future__ import annotations

import collections
import datetime
import email.utils
from collections.abc import Sequence
from email.message import EmailMessage

from korall_operator.alerting.grouping import Alert, Notification

MAX_NAMES_IN_DIGEST = 200


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "?"
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _what(alert: Alert) -> str:
    key = alert.key
    return f"{key.reason} on {key.kind} {key.namespace}/{key.name}"


def _by_reason(alerts: Sequence[Alert]) -> str:
    counts = collections.Counter(a.key.reason for a in alerts)
    return ", ".join(f"{reason} ({n})" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def subject(n: Notification, cluster: str = "") -> str:
    tag = f"[korall {cluster}]" if cluster else "[korall]"
    firing, resolved = n.firing, n.resolved
    if firing:
        state = f"FIRING {len(firing)}" if len(firing) > 1 else "FIRING"
        what = _what(firing[0]) if len(firing) == 1 else _by_reason(firing)
        extra = f", {len(resolved)} resolved" if resolved else ""
        again = " (still firing)" if n.repeat else ""
        return f"{tag} {state} {n.group}{extra}{again}: {what}"
    state = f"RESOLVED {len(resolved)}" if len(resolved) > 1 else "RESOLVED"
    what = _what(resolved[0]) if len(resolved) == 1 else _by_reason(resolved)
    return f"{tag} {state} {n.group}: {what}"


def body(n: Notification, *, cluster: str = "", digest_after: int = 10, repeat_interval_s: float = 0) -> str:
    where = f" on {cluster}" if cluster else ""
    head = []
    if n.firing:
        head.append(f"{len(n.firing)} alert{'s' if len(n.firing) != 1 else ''} FIRING")
    if n.resolved:
        head.append(f"{len(n.resolved)} RESOLVED")
    lines = [f"{', '.join(head)} (severity {n.group}){where}.", ""]
    if n.firing:
        lines.append("FIRING")
        shown = n.firing[:digest_after]
        for alert in shown:
            new = "" if alert.key in n.new or not n.new else " (mailed before)"
            lines.append(f"- {alert.key.reason}: {alert.key.kind} {alert.key.namespace}/{alert.key.name}, since "
                         f"{_when(alert.starts_at)}{new}")  # fmt: skip
            if alert.message:
                lines.append(f"  {alert.message}")
            lines.append(f"  kubectl -n {alert.key.namespace} describe {alert.key.kind.lower()} {alert.key.name}")
        rest = n.firing[digest_after:]
        if rest:
            lines += ["", f"... and {len(rest)} more: {_by_reason(rest)}"]
            names = [f"{a.key.namespace}/{a.key.name} ({a.key.reason})" for a in rest[:MAX_NAMES_IN_DIGEST]]
            lines += [f"  {name}" for name in names]
            if len(rest) > MAX_NAMES_IN_DIGEST:
                lines.append(f"  ... {len(rest) - MAX_NAMES_IN_DIGEST} more not listed: kubectl get im,cap -A")
        lines.append("")
    if n.resolved:
        lines.append("RESOLVED")
        for alert in n.resolved[:digest_after]:
            lines.append(f"- {alert.key.reason}: {alert.key.kind} {alert.key.namespace}/{alert.key.name}, "
                         f"{_when(alert.starts_at)} to {_when(alert.resolved_at)}")  # fmt: skip
        rest = n.resolved[digest_after:]
        if rest:
            lines.append(f"... and {len(rest)} more: {_by_reason(rest)}")
        lines.append("")
    lines.append("-- ")
    footer = f"korall operator, alert group {n.group}."
    if n.firing and repeat_interval_s:
        footer += f" Mailed again every {_duration(repeat_interval_s)} while they fire; each change gets a mail."
    lines.append(footer)
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def render(
    n: Notification,
    *,
    sender: str,
    recipients: Sequence[str],
    cluster: str = "",
    digest_after: int = 10,
    repeat_interval_s: float = 0,
    now: float,
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(n, cluster)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.formatdate(now, usegmt=True)
    domain = sender.rpartition("@")[2] or "korall.invalid"
    message["Message-ID"] = f"<{n.id}@{domain}>"
    message["X-Korall-Group"] = n.group
    message["X-Korall-Firing"] = str(len(n.firing))
    message["X-Korall-Resolved"] = str(len(n.resolved))
    message.set_content(body(n, cluster=cluster, digest_after=digest_after, repeat_interval_s=repeat_interval_s))
    return message
