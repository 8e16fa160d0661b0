"""Event delivery for one service: the spool, the publisher, their metrics and their state, behind `emit`.

A service builds one `EventDelivery` from `EventsSettings`, starts it with the app and calls `emit(event)` from
whatever thread makes events (the camera worker, the audio capture thread). `emit` returns once the event is
committed to the spool; the publisher thread takes it from there. Without EVENTS_MQTT_URL the delivery is
disabled: `emit` does nothing, no file is opened, no metric is registered.

Nothing is dropped without a trace: an eviction (spool limit) or a failed spool write is counted per reason,
shown in /health and /metrics, logged (the first at once, then a summary at most every LOG_EVERY_S) and, for
evictions, recorded with its sequence range for the heartbeat.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge

from .event_payload import Event, Source, Topics, event_payload, heartbeat_payload
from .event_settings import EventsSettings
from .mqtt import DeliveryState, MqttPublisher
from .outbox import Outbox, SpoolError, SpoolLimits

log = logging.getLogger("korall.events")

LOG_EVERY_S = 10.0
EVICTION_REASONS = ("max_events", "max_bytes", "max_age")


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.spooled = Counter(
            "korall_events_spooled_total", "Events written to the spool, by type.", ["type"], registry=r
        )
        self.published = Counter(
            "korall_events_published_total", "Events the broker acknowledged (then deleted from the spool).", registry=r
        )
        self.evicted = Counter(
            "korall_events_evicted_total",
            "Unsent events evicted from the spool (oldest first), by the limit that forced it.",
            ["reason"],
            registry=r,
        )
        for reason in EVICTION_REASONS:
            self.evicted.labels(reason)
        self.lost = Counter(
            "korall_events_lost_total",
            "Events that could not be written to the spool (disk full, I/O error).",
            registry=r,
        )
        self.state = Enum(
            "korall_events_delivery_state",
            "State of the connection to the broker.",
            states=[str(s) for s in DeliveryState],
            registry=r,
        )
        self.connected = Gauge("korall_events_broker_connected", "1 while connected to the broker.", registry=r)
        self.depth = Gauge("korall_events_spool_depth", "Events in the spool, not yet acknowledged.", registry=r)
        self.payload_bytes = Gauge("korall_events_spool_payload_bytes", "Payload bytes in the spool.", registry=r)
        self.file_bytes = Gauge("korall_events_spool_file_bytes", "Size of the spool's files on disk.", registry=r)
        self.oldest_age = Gauge(
            "korall_events_oldest_unsent_age_seconds",
            "Age of the oldest unacknowledged event (0 when none).",
            registry=r,
        )
        self.last_seq = Gauge("korall_events_last_sequence", "Sequence number of the last event spooled.", registry=r)


class EventDelivery:
    def __init__(self, settings: EventsSettings, service: str, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.source = Source(settings.source_namespace, settings.source_name or service, settings.source_node, service)
        self.topics = Topics.for_source(settings.topic_prefix, self.source)
        self._registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._evicted = dict.fromkeys(EVICTION_REASONS, 0)
        self._lost = 0
        self._last_error: str | None = None
        self._unlogged: dict[str, int] = {}
        self._last_log = float("-inf")
        self._started_time = time.time()
        self.outbox: Outbox | None = None
        self.publisher: MqttPublisher | None = None
        self.metrics: DeliveryMetrics | None = DeliveryMetrics(self._registry) if self.enabled else None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool and start publishing. A spool that cannot be opened leaves the service running, with
        delivery in the spool_error state (every event then counted as lost), rather than crash-looping it."""
        if not self.enabled:
            return
        limits = SpoolLimits(
            self.settings.spool_max_events, self.settings.spool_max_bytes, self.settings.spool_max_age_s
        )
        try:
            self.outbox = Outbox(self.settings.spool_dir, limits, on_evict=self._on_evict)
        except SpoolError as exc:
            self._last_error = str(exc)
            self._state(DeliveryState.SPOOL_ERROR, str(exc))
            log.error("events: %s; events will NOT be delivered (each one is counted as lost)", exc)
            return
        self._install_gauges(self.outbox)
        self._set_last_seq(self.outbox.last_seq(self.source.key))
        self.publisher = MqttPublisher(
            self.settings,
            self.outbox,
            self.topics,
            _client_id(self.source),
            heartbeat=self._heartbeat,
            on_published=self._on_published,
            on_state=self._state,
        )
        self.publisher.start()
        stats = self.outbox.stats()
        log.info(
            "events: to %s as %s, spool %s (%d waiting)",
            self.settings.broker,
            self.topics.events,
            self.outbox.path,
            stats.depth,
        )

    def stop(self, drain_s: float = 2.0) -> None:
        """Stop publishing (after up to `drain_s` of draining while connected). The spool stays open for reading,
        so /health and /metrics keep answering until the process ends; every write is already committed."""
        if self.publisher is not None:
            self.publisher.stop(drain_s)
        self._flush_log()

    # -- the producer side -------------------------------------------------------------------------------------

    def emit(self, event: Event) -> int | None:
        """Commit `event` to the spool (thread-safe); returns its sequence number, or None when it was not kept."""
        if not self.enabled:
            return None
        if self.outbox is None:
            self._on_lost(self._last_error or "the spool is not open")
            return None
        source = self.source
        try:
            seq = self.outbox.append(
                source.key, self.topics.events, lambda n, created: event_payload(event, source, n, created)
            )
        except SpoolError as exc:
            self._on_lost(str(exc))
            return None
        except (ValueError, TypeError) as exc:  # a payload JSON cannot carry: a bug, but never a silent one
            self._on_lost(f"{event.type} event {event.id} cannot be rendered as JSON: {exc}")
            return None
        if self.metrics is not None:
            self.metrics.spooled.labels(event.type).inc()
            self.metrics.last_seq.set(seq)
        if self.publisher is not None:
            self.publisher.wake()
        return seq

    # -- what /health, /metrics and the heartbeat show ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False, "state": str(DeliveryState.DISABLED), "reason": "no EVENTS_MQTT_URL"}
        publisher, outbox = self.publisher, self.outbox
        if publisher is not None:
            state = publisher.state
        else:  # not started yet or already stopped, unless the spool failed to open
            state = DeliveryState.SPOOL_ERROR if self._last_error else DeliveryState.STOPPED
        body: dict[str, Any] = {
            "enabled": True,
            "state": str(state),
            "reason": publisher.reason if publisher else self._last_error,
            "since": round(publisher.since, 3) if publisher else None,
            "connected": bool(publisher and publisher.connected),
            "broker": str(self.settings.broker),
            "source": self.source.as_dict(),
            "topics": {
                "events": self.topics.events,
                "availability": self.topics.availability,
                "heartbeat": self.topics.heartbeat,
            },
            "published": publisher.published if publisher else 0,
            "connection_attempts": publisher.attempts if publisher else 0,
        }
        with self._lock:
            body["evicted"] = dict(self._evicted)
            body["lost"] = self._lost
        if outbox is not None:
            stats = outbox.stats()
            evicted_total, _ = outbox.evictions(self.source.key, limit=0)
            age = stats.oldest_age_s()
            body.update(
                last_seq=outbox.last_seq(self.source.key),
                evicted_total=evicted_total,
                spool={
                    "path": str(outbox.path),
                    "depth": stats.depth,
                    "payload_bytes": stats.payload_bytes,
                    "file_bytes": stats.file_bytes,
                    "oldest_unsent_age_s": None if age is None else round(age, 3),
                    "limits": {
                        "max_events": outbox.limits.max_events,
                        "max_bytes": outbox.limits.max_bytes,
                        "max_age_s": outbox.limits.max_age_s,
                    },
                },
            )
        return body

    def _heartbeat(self) -> bytes:
        assert self.outbox is not None
        stats = self.outbox.stats()
        evicted_total, ranges = self.outbox.evictions(self.source.key)
        age = stats.oldest_age_s()
        with self._lock:
            lost = self._lost
        state = {
            "last_seq": self.outbox.last_seq(self.source.key),
            "spool_depth": stats.depth,
            "oldest_unsent_age_s": None if age is None else round(age, 3),
            "published": self.publisher.published if self.publisher else 0,
            "evicted_total": evicted_total,
            "evicted_ranges": ranges,
            "lost": lost,
            "interval_s": self.settings.heartbeat_s,
            "started_time": round(self._started_time, 3),
        }
        return heartbeat_payload(self.source, state)

    def _install_gauges(self, outbox: Outbox) -> None:
        m = self.metrics
        assert m is not None
        m.depth.set_function(lambda: outbox.stats().depth)
        m.payload_bytes.set_function(lambda: outbox.stats().payload_bytes)
        m.file_bytes.set_function(lambda: outbox.stats().file_bytes)
        m.oldest_age.set_function(lambda: outbox.stats().oldest_age_s() or 0.0)

    def _set_last_seq(self, seq: int) -> None:
        if self.metrics is not None:
            self.metrics.last_seq.set(seq)

    # -- callbacks -----------------------------------------------------------------------------------------------

    def _state(self, state: DeliveryState, reason: str | None) -> None:
        if self.metrics is not None:
            self.metrics.state.state(str(state))
            self.metrics.connected.set(1 if state is DeliveryState.CONNECTED else 0)

    def _on_published(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.published.inc(count)

    def _on_evict(self, reason: str, count: int) -> None:
        with self._lock:
            self._evicted[reason] = self._evicted.get(reason, 0) + count
        if self.metrics is not None:
            self.metrics.evicted.labels(reason).inc(count)
        self._log_rarely(
            f"evicted ({reason})", count, f"spool limit {reason} reached: the oldest unsent events are evicted"
        )

    def _on_lost(self, why: str) -> None:
        with self._lock:
            self._lost += 1
            self._last_error = why
        if self.metrics is not None:
            self.metrics.lost.inc()
        self._log_rarely("lost", 1, f"an event could not be spooled and is lost: {why}")

    def _log_rarely(self, what: str, count: int, message: str) -> None:
        """Log at once after a quiet spell, else gather the counts into one line at most every LOG_EVERY_S."""
        now = time.monotonic()
        with self._lock:
            self._unlogged[what] = self._unlogged.get(what, 0) + count
            if now - self._last_log < LOG_EVERY_S:
                return
            self._last_log = now
        self._flush_log(message)

    def _flush_log(self, message: str = "events were not delivered") -> None:
        with self._lock:
            pending, self._unlogged = self._unlogged, {}
            totals = {"evicted": dict(self._evicted), "lost": self._lost}
        if pending:
            counts = ", ".join(f"{n} {kind}" for kind, n in pending.items())
            log.warning("events: %s (%s since the last report; totals %s)", message, counts, json.dumps(totals))


def _client_id(source: Source) -> str:
    """Unique per process and stable enough to read in the broker's log: service, source, pod (host) name."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"korall-{source.service}-{source.namespace}-{source.name}-{host}-{os.getpid()}"
