"""`python -m korall_workloads.events tail`: subscribe, print each event once, report gaps; how a user checks that
nothing was lost.

It subscribes (QoS 1) to the events and heartbeats of every source under a topic prefix, drops duplicates by
(source, sequence number), says at once when a sequence number is skipped (and when a late one fills the gap),
and prints a summary per source at the end (Ctrl-C, --duration, --count or --idle): received, duplicates,
missing ranges, how many of those the source reported evicting (its spool limit), and how many it still holds
(from its last heartbeat). Exit status 0 when no sequence number is missing, 1 otherwise.

With --session NAME the broker keeps a persistent session for this consumer: stop it and start it again with the
same name, and it receives what was published meanwhile (the broker queues it), so nothing falls in between.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import paho.mqtt.client as paho
from korall_contract import EventsEnv
from paho.mqtt.enums import CallbackAPIVersion

from korall_workloads.common.event_payload import EVENT_SCHEMA, HEARTBEAT_SCHEMA
from korall_workloads.common.event_settings import parse_broker_url

from .ledger import Ledger, Observation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m korall_workloads.events", description="korall event tools")
    commands = parser.add_subparsers(dest="command", required=True)
    tail = commands.add_parser("tail", help="subscribe, de-duplicate, report gaps", description=__doc__)
    tail.add_argument("--broker", default=os.environ.get(EventsEnv.MQTT_URL), help="mqtt://host[:port] or mqtts://")
    tail.add_argument("--prefix", default="korall", help="topic prefix of the sources (default korall)")
    tail.add_argument(
        "--topic",
        action="append",
        help="topic filter(s) to subscribe to instead of <prefix>/+/+/events and <prefix>/+/+/heartbeat",
    )
    tail.add_argument("--username", default=os.environ.get(EventsEnv.MQTT_USERNAME))
    tail.add_argument("--password", default=os.environ.get(EventsEnv.MQTT_PASSWORD))
    tail.add_argument("--cafile", default=os.environ.get(EventsEnv.MQTT_TLS_CA_FILE), help="CA bundle for mqtts://")
    tail.add_argument("--insecure", action="store_true", help="mqtts://: skip the host name check")
    tail.add_argument("--session", help="persistent session name: the broker keeps what arrives while away")
    tail.add_argument("--from-seq", type=int, help="expect every source's events from this number (1: all)")
    tail.add_argument("--duration", type=float, help="stop after this many seconds")
    tail.add_argument("--count", type=int, help="stop after this many distinct events")
    tail.add_argument("--idle", type=float, help="stop after this many seconds without a new event")
    tail.add_argument("--json", action="store_true", help="one JSON object per line: each new event, then the summary")
    tail.add_argument("--quiet", action="store_true", help="only gaps and the summary")
    return parser


class Tail:
    def __init__(self, args: argparse.Namespace, out: TextIO = sys.stdout) -> None:
        self.args = args
        self.out = out
        self.ledger = Ledger(args.from_seq)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected_once = False
        self.connect_error: str | None = None
        self.distinct = 0

    def run(self) -> int:
        broker = parse_broker_url(self.args.broker)
        client = self._client(broker.tls)
        stop = {"now": False}

        def on_signal(signum: int, frame: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        client.connect_async(broker.host, broker.port, keepalive=30)
        client.loop_start()
        started = last_new = time.monotonic()
        try:
            while not stop["now"]:
                try:
                    topic, payload = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    pass
                else:
                    if self._handle(topic, payload):
                        last_new = time.monotonic()
                now = time.monotonic()
                a = self.args
                if (
                    (a.duration is not None and now - started >= a.duration)
                    or (a.count is not None and self.distinct >= a.count)
                    or (a.idle is not None and now - last_new >= a.idle)
                ):
                    break
        finally:
            client.disconnect()
            client.loop_stop()
        while not self.inbox.empty():  # what arrived before the disconnect still counts
            self._handle(*self.inbox.get_nowait())
        return self._finish()

    def _client(self, tls: bool) -> paho.Client:
        a = self.args
        persistent = a.session is not None
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=a.session or "",
            clean_session=not persistent,
        )
        client.reconnect_delay_set(1, 10)
        if a.username:
            client.username_pw_set(a.username, a.password)
        if tls:
            client.tls_set(ca_certs=a.cafile, cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(a.insecure)
        topics = a.topic or [f"{a.prefix}/+/+/events", f"{a.prefix}/+/+/heartbeat"]

        def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                self.connect_error = str(reason)
                self._say(f"# the broker refused the connection: {reason}", error=True)
                return
            self.connected_once = True
            for topic in topics:
                c.subscribe(topic, qos=1)

        client.on_connect = on_connect
        client.on_message = lambda c, u, msg: self.inbox.put((msg.topic, bytes(msg.payload)))
        return client

    def _handle(self, topic: str, payload: bytes) -> bool:
        """Account for one message; True when it was a new (not duplicate) event."""
        try:
            body = json.loads(payload)
            schema = body.get("schema") if isinstance(body, dict) else None
        except ValueError:
            schema = None
        if schema == HEARTBEAT_SCHEMA:
            self.ledger.heartbeat(body)
            return False
        if schema != EVENT_SCHEMA:
            self._say(f"# ignored a message on {topic} that is not a {EVENT_SCHEMA} event", error=True)
            return False
        seen = self.ledger.event(body)
        if seen.gap is not None:
            first, last = seen.gap
            self._say(
                f"# GAP {seen.source}: {first}..{last} missing ({last - first + 1}) before {seen.seq}", error=True
            )
        if seen.verdict == "duplicate":
            return False
        if seen.verdict == "late":
            self._say(f"# late: {seen.source} seq {seen.seq} filled part of a gap", error=True)
        self.distinct += 1
        if not self.args.quiet:
            self._say(json.dumps(body) if self.args.json else _line(body, seen))
        return True

    def _finish(self) -> int:
        summary = self.ledger.summary()
        complete = self.ledger.complete and bool(summary)
        if self.args.json:
            self._say(json.dumps({"summary": summary, "complete": complete}))
        else:
            if not summary:
                why = f" (connection refused: {self.connect_error})" if self.connect_error else ""
                self._say(f"# no events received{why}")
            for key, s in summary.items():
                self._say(
                    f"# {key}: seq {s['first']}..{s['last']}, {s['received']} received, {s['duplicates']} duplicates, "
                    f"{s['missing']} missing ({s['missing_evicted_by_source']} evicted by the source)"
                    + (f", {s['not_yet_received']} not yet received" if s["not_yet_received"] else "")
                )
            self._say("# none missing" if complete else "# SOME EVENTS ARE MISSING" if summary else "")
        return 0 if complete else 1

    def _say(self, text: str, error: bool = False) -> None:
        if text:
            print(text, file=self.out, flush=True)


def _line(body: dict[str, Any], seen: Observation) -> str:
    data = body.get("data", {})
    what = data.get("label") or ""
    if "best" in data:
        what += f" best {data['best']['score']:.2f}"
    if "duration_s" in data:
        what += f" {data['duration_s']:.2f} s"
    stamp = time.strftime("%H:%M:%S", time.localtime(body["time"]))
    return f"{stamp} {seen.source} #{seen.seq} {body['type']} {what} id={body['id']}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.broker:
        print(f"korall events: give --broker or set {EventsEnv.MQTT_URL}", file=sys.stderr)
        return 2
    try:
        parse_broker_url(args.broker)
    except ValueError as exc:
        print(f"korall events: --broker {args.broker!r}: {exc}", file=sys.stderr)
        return 2
    return Tail(args).run()
