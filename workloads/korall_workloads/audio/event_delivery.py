"""Audio events out of the node: each silence, speech and loud-noise event the hub publishes goes to the broker.

The hub calls `on_record` on the capture thread with the record it just numbered (`audio.<type>` on the wire).
An audio event is reported once, when it has ended, so one message carries its start and its end. Its times in
the payload are wall-clock: the detector counts seconds of audio from the stream's start, and the event is dated
back from now by how far the audio clock has moved past it (exact for a live device; for a WAV read faster than
real time only the order and the durations are meaningful). The stream-relative times stay in `data`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from korall_workloads.common.delivery import EventDelivery
from korall_workloads.common.event_payload import Event
from korall_workloads.common.event_settings import EventsSettings

log = logging.getLogger("korall.audio")


class AudioEvents:
    def __init__(self, settings: EventsSettings | None, registry: CollectorRegistry) -> None:
        self.delivery = (
            EventDelivery(settings, "audio", registry) if settings is not None and settings.enabled else None
        )
        self.audio_clock: Callable[[], float] | None = None
        """Seconds of audio processed so far (the capture service's); set once the capture service exists."""

    def on_record(self, record: dict[str, Any]) -> None:
        """Capture thread: spool one hub record. Never raises: the capture thread must go on whatever happens."""
        if self.delivery is None:
            return
        try:
            self.delivery.emit(self.event(record))
        except Exception:
            log.exception("could not hand audio event %s to the delivery", record.get("id"))

    def event(self, record: dict[str, Any]) -> Event:
        emitted = float(record.get("emitted_at") or time.time())
        now_audio = self.audio_clock() if self.audio_clock is not None else record["end_s"]
        behind = max(0.0, now_audio - record["end_s"])  # how long ago, in audio, the event ended
        end = emitted - behind
        start = end - record["duration_s"]
        data = {
            "start_s": record["start_s"],
            "end_s": record["end_s"],
            "duration_s": record["duration_s"],
            "peak_dbfs": record["peak_dbfs"],
            "local_id": record["id"],
        }
        return Event(f"audio.{record['type']}", end, start, end, data)

    def start(self) -> None:
        if self.delivery is not None:
            self.delivery.start()

    def stop(self) -> None:
        if self.delivery is not None:
            self.delivery.stop()

    def status(self) -> dict[str, Any]:
        if self.delivery is None:
            return {"enabled": False, "state": "disabled", "reason": "no EVENTS_MQTT_URL"}
        return self.delivery.status()
