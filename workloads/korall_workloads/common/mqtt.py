"""The publisher: one thread that moves the outbox to an MQTT broker, oldest first, deleting only what was acked.

paho-mqtt does the protocol (CONNECT, TLS, keep-alive, PUBACK/PUBCOMP). Each connection is a *session* with a
fresh paho client that never reconnects by itself (`reconnect_on_failure=False`): paho keeps unacknowledged
messages in memory and would resend them on its own reconnect, beside the copies in the outbox. Here the outbox
is the only record: when a session ends, whatever was in flight is simply published again, from the oldest row,
by the next session. So delivery after an outage is in order per source, with at most a window of duplicates
(consumers de-duplicate by source and sequence number). Between sessions the thread waits with capped
exponential backoff (EVENTS_RECONNECT_MIN_S doubling up to EVENTS_RECONNECT_MAX_S).

In a session: the retained `online` availability first (the last will says `offline`), then a heartbeat every
EVENTS_HEARTBEAT_S, and the outbox with at most EVENTS_MAX_INFLIGHT publishes awaiting their acknowledgement.
A PUBACK deletes its row; a PUBACK with an MQTT 5 failure code (the broker will not take it, e.g. not
authorised) keeps the row, ends the session and says so in the state.
"""

from __future__ import annotations

import enum
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from .event_payload import OFFLINE, ONLINE, Topics
from .event_settings import EventsSettings
from .outbox import Outbox, SpoolError

log = logging.getLogger("korall.events")

CONNECT_TIMEOUT_S = 10.0
"""TCP connect, TLS handshake and CONNACK must each come within this."""
EXPIRY_EVERY_S = 1.0
"""How often the age limit of the spool is enforced, connected or not."""


class DeliveryState(enum.StrEnum):
    DISABLED = "disabled"  # no EVENTS_MQTT_URL
    SPOOL_ERROR = "spool_error"  # the spool cannot be opened: nothing can be kept, nothing is sent
    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"  # DNS, TCP or no CONNACK in time
    TLS_ERROR = "tls_error"  # the handshake or the certificate check failed, or the TLS files are unusable
    REFUSED = "refused"  # the broker answered CONNACK with a failure: bad credentials, not authorised...
    DISCONNECTED = "disconnected"  # the connection was lost after it was up
    REJECTED = "rejected"  # the broker refused a publish (MQTT 5 PUBACK failure code)
    STOPPED = "stopped"


@dataclass(frozen=True)
class _Outcome:
    """How a session ended: the state to report, why, and whether the broker had accepted the connection."""

    state: DeliveryState
    reason: str | None
    was_connected: bool = False


class MqttPublisher:
    def __init__(
        self,
        settings: EventsSettings,
        outbox: Outbox,
        topics: Topics,
        client_id: str,
        *,
        heartbeat: Callable[[], bytes],
        on_published: Callable[[int], None] = lambda n: None,
        on_state: Callable[[DeliveryState, str | None], None] = lambda state, reason: None,
    ) -> None:
        self.settings = settings
        self.broker = settings.broker
        self._outbox = outbox
        self._topics = topics
        self._client_id = client_id
        self._heartbeat = heartbeat
        self._on_published = on_published
        self._on_state = on_state
        self._cond = threading.Condition()
        self._dirty = False  # something happened: an event, an ack, a lost connection, stop
        self._acks: list[tuple[int, ReasonCode]] = []
        self._lost: str | None = None
        self._connack: ReasonCode | None = None
        self._receive_maximum: int | None = None
        self._inflight: dict[int, int] = {}  # mid -> outbox row id; only the publisher thread touches it
        self._stopping = threading.Event()
        self._closed = threading.Event()  # paho reported the end of the current connection
        self._drain_until = 0.0
        self._thread: threading.Thread | None = None
        self._next_expiry = 0.0
        self.state = DeliveryState.CONNECTING
        self.reason: str | None = None
        self.since = time.time()
        self.attempts = 0
        self.published = 0
        self._last_failure: tuple[DeliveryState, str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events-mqtt", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Stop; while connected, first let the spool drain for up to `drain_s` and publish `offline`."""
        self._drain_until = time.monotonic() + drain_s
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(drain_s + CONNECT_TIMEOUT_S + 2)
            if self._thread.is_alive():
                log.warning("the MQTT publisher did not stop in time")

    def wake(self) -> None:
        """Something is waiting: a new event, or stop (thread-safe, never blocks on the network)."""
        with self._cond:
            self._dirty = True
            self._cond.notify()

    @property
    def connected(self) -> bool:
        return self.state is DeliveryState.CONNECTED

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self.attempts += 1
            try:
                outcome = self._session()
            except SpoolError as exc:
                log.error("event spool failed during delivery: %s", exc)
                outcome = _Outcome(DeliveryState.SPOOL_ERROR, str(exc))
            except Exception as exc:  # a bug here must not end delivery for good: log it and start a new session
                log.exception("unexpected error in the MQTT publisher")
                outcome = _Outcome(DeliveryState.DISCONNECTED, f"unexpected {type(exc).__name__}: {exc}")
            if self._stopping.is_set():
                break
            failures = 1 if outcome.was_connected else failures + 1
            delay = self.settings.delay(failures)
            self._set_state(outcome.state, f"{outcome.reason}; retrying in {delay:g} s")
            self._idle(delay)
        self._set_state(DeliveryState.STOPPED, None)

    def _idle(self, seconds: float) -> None:
        """Wait out the backoff, enforcing the spool's age limit meanwhile (outages are when it matters)."""
        until = time.monotonic() + seconds
        while not self._stopping.is_set():
            self._expire()
            left = until - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, EXPIRY_EVERY_S))

    def _expire(self) -> None:
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRY_EVERY_S
            try:
                self._outbox.evict_expired()
            except SpoolError as exc:
                log.error("%s", exc)

    def _set_state(self, state: DeliveryState, reason: str | None) -> None:
        if (state, reason) == (self.state, self.reason):
            return
        if state is not self.state:
            self.since = time.time()
        self.state, self.reason = state, reason
        self._on_state(state, reason)
        if state is DeliveryState.CONNECTED:
            log.info("events: connected to %s (attempt %d)", self.broker, self.attempts)
            self._last_failure = None
        elif state in (DeliveryState.CONNECTING, DeliveryState.STOPPED):
            log.debug("events: %s %s", state, reason or "")
        elif (state, _without_retry(reason)) != self._last_failure:  # an outage logs once, not at every retry
            self._last_failure = (state, _without_retry(reason))
            log.warning("events: %s: %s", state, reason)
        else:
            log.debug("events: still %s (attempt %d): %s", state, self.attempts, reason)

    # -- one connection ----------------------------------------------------------------------------------------

    def _session(self) -> _Outcome:
        # The state stays `connecting` (first attempt) or the last failure (every retry) until this one resolves:
        # /health and the metric show why delivery is down, not a flicker of `connecting` between attempts.
        self._acks, self._lost, self._connack, self._receive_maximum = [], None, None, None
        self._closed.clear()
        try:
            client = self._new_client()
        except (ssl.SSLError, OSError, ValueError) as exc:
            return _Outcome(DeliveryState.TLS_ERROR, f"cannot set up TLS: {exc}")
        try:
            if self.settings.mqtt_version == "5":
                client.connect(self.broker.host, self.broker.port, self.settings.keepalive_s, clean_start=True)
            else:
                client.connect(self.broker.host, self.broker.port, self.settings.keepalive_s)
        except ssl.SSLError as exc:  # before OSError: it is one
            return _Outcome(DeliveryState.TLS_ERROR, f"TLS with {self.broker} failed: {exc}")
        except (OSError, ValueError) as exc:
            return _Outcome(DeliveryState.UNREACHABLE, f"cannot connect to {self.broker}: {_describe(exc)}")
        client.loop_start()
        try:
            return self._connected_session(client)
        finally:
            client.disconnect()  # a no-op when the connection is already gone
            self._closed.wait(1.0)  # the DISCONNECT is written and the socket closed by paho's thread
            client.loop_stop()  # that thread ends with the connection (reconnect_on_failure=False)
            if (sock := client.socket()) is not None:
                sock.close()  # never leave a half-open connection behind for the broker to find
            self._settle()  # acks that came before the end still delete their rows
            self._inflight.clear()
            self._outbox.protect_upto(0)

    def _connected_session(self, client: paho.Client) -> _Outcome:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        with self._cond:
            while self._connack is None and self._lost is None and not self._stopping.is_set():
                if not self._cond.wait(deadline - time.monotonic()) and time.monotonic() >= deadline:
                    break
        if self._connack is None:
            why = self._lost or f"no CONNACK within {CONNECT_TIMEOUT_S:g} s"
            return _Outcome(DeliveryState.UNREACHABLE, f"{self.broker}: {why}")
        if self._connack.is_failure:
            return _Outcome(DeliveryState.REFUSED, f"{self.broker} refused the connection: {self._connack}")
        self._set_state(DeliveryState.CONNECTED, None)
        client.publish(self._topics.availability, ONLINE, qos=1, retain=True)
        outcome = self._pump(client)
        if outcome.state is DeliveryState.STOPPED:
            info = client.publish(self._topics.availability, OFFLINE, qos=1, retain=True)
            info.wait_for_publish(1.0)
        return outcome

    def _pump(self, client: paho.Client) -> _Outcome:
        """Publish the outbox while the connection lasts; returns how it ended."""
        limits = [self.settings.max_inflight, self._outbox.limits.max_events]
        if self._receive_maximum:
            limits.append(self._receive_maximum)
        window = min(limits)
        last_sent = 0
        next_beat = 0.0
        while True:
            with self._cond:
                self._dirty = False
                lost = self._lost
            rejected = self._settle()
            if rejected is not None:  # first: a broker may drop the connection right after refusing (mosquitto does)
                # Not counted as a good session: the backoff keeps growing while the broker keeps refusing.
                return _Outcome(DeliveryState.REJECTED, f"{self.broker} refused an event: {rejected}")
            if lost is not None:
                return _Outcome(DeliveryState.DISCONNECTED, f"lost the connection to {self.broker}: {lost}", True)
            now = time.monotonic()
            self._expire()
            if now >= next_beat:
                client.publish(self._topics.heartbeat, self._heartbeat(), qos=0, retain=True)
                next_beat = now + self.settings.heartbeat_s
            room = window - len(self._inflight)
            rows = self._outbox.batch(last_sent, room) if room > 0 else []
            for row in rows:
                info = client.publish(row.topic, row.payload, qos=self.settings.qos)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return _Outcome(DeliveryState.DISCONNECTED, f"publish failed: {paho.error_string(info.rc)}", True)
                self._inflight[info.mid] = row.id  # its ack may already be queued: settled on the next pass
                last_sent = row.id
            if rows:
                self._outbox.protect_upto(last_sent)
                if len(rows) == room:
                    continue  # the window is full: acks will wake us; more may be waiting too
            if self._stopping.is_set():
                drained = not self._inflight and self._outbox.stats().depth == 0
                if drained or time.monotonic() >= self._drain_until:
                    return _Outcome(DeliveryState.STOPPED, None, True)
            with self._cond:
                if not self._dirty:
                    self._cond.wait(max(0.0, min(next_beat - time.monotonic(), EXPIRY_EVERY_S)))

    def _settle(self) -> str | None:
        """Delete the rows whose publish was acknowledged; returns the reason of a refused one, if any."""
        with self._cond:
            acks, self._acks = self._acks, []
        done: list[int] = []
        rejected: str | None = None
        for mid, reason in acks:
            row = self._inflight.pop(mid, None)
            if row is None:  # availability or heartbeat
                continue
            if reason.is_failure:
                rejected = str(reason)
            else:
                done.append(row)
        removed = self._outbox.remove(done)
        if removed:
            self.published += removed
            self._on_published(removed)
        return rejected

    # -- paho ------------------------------------------------------------------------------------------------

    def _new_client(self) -> paho.Client:
        s = self.settings
        v5 = s.mqtt_version == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(0)  # the window is ours (the outbox knows what is in flight)
        client.connect_timeout = CONNECT_TIMEOUT_S
        if s.mqtt_username is not None:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password is not None else None
            client.username_pw_set(s.mqtt_username, password)
        if self.broker.tls:
            client.tls_set(
                ca_certs=str(s.mqtt_tls_ca_file) if s.mqtt_tls_ca_file else None,
                certfile=str(s.mqtt_tls_cert_file) if s.mqtt_tls_cert_file else None,
                keyfile=str(s.mqtt_tls_key_file) if s.mqtt_tls_key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(s.mqtt_tls_insecure)
        client.will_set(self._topics.availability, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # Callbacks run on paho's network thread, some while paho holds its own locks: record and wake, nothing else.

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self._connack = reason
            self._receive_maximum = getattr(props, "ReceiveMaximum", None)
            self._dirty = True
            self._cond.notify()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self._lost = str(reason) if reason.is_failure else "closed by the broker"
            self._dirty = True
            self._cond.notify()
        self._closed.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self._acks.append((mid, reason))
            self._dirty = True
            self._cond.notify()


def _without_retry(reason: str | None) -> str:
    return (reason or "").split("; retrying in")[0]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port?)"
    return text
