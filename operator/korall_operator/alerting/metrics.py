"""The alerting's Prometheus metrics, on prometheus-client's default registry (the operator's /metrics serves it).

Counters and the mail gauges are module-level (registered once per process); the firing alerts are read from the
running service's engine at scrape time by a collector, so a resolved alert's series goes away with it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from korall_operator.alerting.grouping import Engine
from korall_operator.alerting.policy import SEVERITIES

MAILS = Counter(
    "korall_operator_alert_mails",
    "Alert mails by result: sent, or failed with the kind of failure (connect, tls, auth, refused, protocol, secret).",
    ["result", "kind"],
)
MAIL_FAILING = Gauge(
    "korall_operator_alert_mail_failing",
    "1 while the last attempt to send an alert mail failed (bad SMTP settings or an unreachable server), else 0.",
)
MAILS_PENDING = Gauge("korall_operator_alert_mails_pending", "Alert mails due and not sent yet (retried).")
LAST_SENT = Gauge("korall_operator_alert_mail_last_sent_timestamp_seconds", "When the last alert mail went out.")
STATE_SAVE_FAILURES = Counter(
    "korall_operator_alert_state_save_failures", "Failed writes of the alert state ConfigMap (retried)."
)


class FiringAlerts(Collector):
    """`korall_operator_alerts_firing{severity}` and one `korall_operator_alert_firing{...} 1` per firing alert."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = GaugeMetricFamily("korall_operator_alerts_firing", "Alerts firing, by severity.", labels=["severity"])
        each = GaugeMetricFamily(
            "korall_operator_alert_firing",
            "1 for each firing alert of a korall resource (its Degraded reason, or NotReady).",
            labels=["resource_namespace", "kind", "name", "reason", "severity"],
        )
        engine = self.engine
        if engine is not None:
            for severity, n in engine.firing_counts().items():
                counts.add_metric([severity], n)
            for alert in engine.alerts():
                if alert.firing:
                    k = alert.key
                    each.add_metric([k.namespace, k.kind, k.name, k.reason, alert.severity], 1)
        else:
            for severity in SEVERITIES:
                counts.add_metric([severity], 0)
        yield counts
        yield each


FIRING = FiringAlerts()
REGISTRY.register(FIRING)
