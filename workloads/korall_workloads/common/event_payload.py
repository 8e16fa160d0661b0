"""The event payload, version 1: what goes on the wire, in one place (schema: event.schema.json, docs/events.md).

A service describes an event (`Event`: type, id, times, data); the outbox gives it the source's next sequence
number inside the transaction that stores it, and `event_payload` renders the JSON then, once: what is spooled
is exactly what is published, byte for byte, however often it is retried.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

EVENT_SCHEMA: Final = "korall.event.v1"
HEARTBEAT_SCHEMA: Final = "korall.heartbeat.v1"
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"


@dataclass(frozen=True)
class Source:
    """Who made an event. (namespace, name, node) is the key that sequence numbers count per."""

    namespace: str
    name: str
    node: str
    service: str  # vision | audio

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.node}"

    def as_dict(self) -> dict[str, str]:
        return {"namespace": self.namespace, "name": self.name, "node": self.node, "service": self.service}


@dataclass(frozen=True)
class Topics:
    """`<prefix>/<namespace>/<name>/events`, `.../availability` (retained online/offline), `.../heartbeat`."""

    events: str
    availability: str
    heartbeat: str

    @classmethod
    def for_source(cls, prefix: str, source: Source) -> Topics:
        base = f"{prefix}/{source.namespace}/{source.name}"
        return cls(f"{base}/events", f"{base}/availability", f"{base}/heartbeat")


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Event:
    """One event as a service reports it, before it has a sequence number.

    `id` stays the same across the messages of one happening (a vision object's new, updates and end); `time` is
    when the state this message reports was observed, `start_time`/`end_time` bound the happening (end None while
    it lasts). Times are seconds since the Unix epoch.
    """

    type: str
    time: float
    start_time: float
    end_time: float | None
    data: dict[str, Any]
    id: str = field(default_factory=new_event_id)
    model: dict[str, str] | None = None  # vision: {"name", "sha256"} of the model that saw it


def event_payload(event: Event, source: Source, seq: int, created_time: float | None = None) -> bytes:
    """The v1 JSON document of `event` as the `seq`-th event of `source` (compact UTF-8).

    Raises ValueError for a NaN or an infinity in the data (JSON has none) and TypeError for a value JSON cannot hold.
    """
    body: dict[str, Any] = {
        "schema": EVENT_SCHEMA,
        "id": event.id,
        "seq": seq,
        "source": source.as_dict(),
        "type": event.type,
        "time": _t(event.time),
        "start_time": _t(event.start_time),
        "end_time": None if event.end_time is None else _t(event.end_time),
        "created_time": _t(time.time() if created_time is None else created_time),
        "data": event.data,
    }
    if event.model is not None:
        body["model"] = event.model
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def heartbeat_payload(source: Source, state: dict[str, Any]) -> bytes:
    """The v1 heartbeat: the source, when it was sent, and the delivery figures a consumer needs (see docs)."""
    body = {"schema": HEARTBEAT_SCHEMA, "source": source.as_dict(), "time": _t(time.time()), **state}
    return json.dumps(body, separators=(",", ":")).encode()


def _t(value: float) -> float:
    return round(value, 3)
