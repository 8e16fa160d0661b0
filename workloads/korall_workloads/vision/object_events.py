"""Object events from the camera's detections, the way NVRs report them: new, update, end, one id across them.

`ObjectTracker` is pure (results in, events out, no clock of its own), so every rule is tested on plain lists:
- a label detected in a result with no open event for it starts one (`object.new`, with that detection);
- while it stays, an `object.update` is sent when its best score improved, at most every
  EVENTS_OBJECT_UPDATE_INTERVAL_S, carrying the best score and box so far and the latest sighting;
- it ends (`object.end`) once a result arrives in which it has been absent for EVENTS_OBJECT_END_AFTER_S of frame
  time; `expire` also ends it when no result at all came for that long plus the motion gate's longest skip (the
  camera stopped, or stalled), and `close` ends everything at shutdown. `end_reason` says which.
One event per label (not per instance: there is no tracker of identities); `count` is the most instances of the
label seen in one frame.

`CameraEvents` glues it to the service: the camera pipeline's `on_result` feeds it on the inference thread, a
small thread runs `expire`, and every event goes to `EventDelivery.emit` with the model's name and sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from korall_workloads.common.delivery import EventDelivery
from korall_workloads.common.event_payload import Event, new_event_id
from korall_workloads.common.event_settings import EventsSettings

from .camera.pipeline import FrameResult
from .camera.settings import CaptureSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sighting:
    """The best detection of one label in one frame."""

    score: float
    box: dict[str, float]
    box_norm: dict[str, float]
    time: float
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "box": self.box,
            "box_norm": {k: round(v, 4) for k, v in self.box_norm.items()},
            "time": round(self.time, 3),
            "count": self.count,
        }


@dataclass
class _Track:
    label: str
    id: str
    first_seen: float
    best: Sighting
    last: Sighting
    frames: int = 1
    max_count: int = 1
    last_sent: float = 0.0
    improved: bool = False
    image: dict[str, int] = field(default_factory=dict)


class ObjectTracker:
    def __init__(self, end_after_s: float, update_interval_s: float, labels: frozenset[str] = frozenset()) -> None:
        self.end_after_s = end_after_s
        self.update_interval_s = update_interval_s
        self.labels = labels
        self._tracks: dict[str, _Track] = {}
        self.last_result: float | None = None

    @property
    def open_labels(self) -> list[str]:
        return sorted(self._tracks)

    def observe(self, frame_time: float, detections: Iterable[dict[str, Any]], image: dict[str, int]) -> list[Event]:
        """One inferred frame: its detections (label, score, box, box_norm dicts) at `frame_time` (Unix s)."""
        self.last_result = frame_time
        sightings = self._best_per_label(frame_time, detections)
        out: list[Event] = []
        for label, sighting in sightings.items():
            track = self._tracks.get(label)
            if track is None:
                track = _Track(label, new_event_id(), frame_time, sighting, sighting, last_sent=frame_time, image=image)
                track.max_count = sighting.count
                self._tracks[label] = track
                out.append(self._event("object.new", track, frame_time))
                continue
            track.last = sighting
            track.frames += 1
            track.max_count = max(track.max_count, sighting.count)
            if sighting.score > track.best.score:
                track.best = sighting
                track.improved = True
            if track.improved and frame_time - track.last_sent >= self.update_interval_s:
                track.improved = False
                track.last_sent = frame_time
                out.append(self._event("object.update", track, frame_time))
        for label in [label for label in self._tracks if label not in sightings]:
            track = self._tracks[label]
            if frame_time - track.last.time >= self.end_after_s:
                out.append(self._end(label, "absent"))
        return out

    def expire(self, now: float, idle_s: float) -> list[Event]:
        """End every open event when no result at all has come for `idle_s` (the camera stopped or stalled)."""
        if not self._tracks or self.last_result is None or now - self.last_result < idle_s:
            return []
        return [self._end(label, "no_frames") for label in list(self._tracks)]

    def close(self) -> list[Event]:
        """Shutdown: end whatever is open, at its last sighting."""
        return [self._end(label, "shutdown") for label in list(self._tracks)]

    def _best_per_label(self, frame_time: float, detections: Iterable[dict[str, Any]]) -> dict[str, Sighting]:
        best: dict[str, Sighting] = {}
        counts: dict[str, int] = {}
        for d in detections:
            label = str(d["label"])
            if self.labels and label not in self.labels:
                continue
            counts[label] = counts.get(label, 0) + 1
            score = float(d["score"])
            if label not in best or score > best[label].score:
                best[label] = Sighting(score, dict(d["box"]), dict(d.get("box_norm") or {}), frame_time, 0)
        return {label: Sighting(s.score, s.box, s.box_norm, s.time, counts[label]) for label, s in best.items()}

    def _end(self, label: str, reason: str) -> Event:
        track = self._tracks.pop(label)
        return self._event("object.end", track, track.last.time, end_reason=reason)

    def _event(self, kind: str, track: _Track, at: float, end_reason: str | None = None) -> Event:
        data = {
            "label": track.label,
            "best": track.best.as_dict(),
            "last": track.last.as_dict(),
            "frames": track.frames,
            "count": track.max_count,
            "image": track.image,
            "end_reason": end_reason,
        }
        end = track.last.time if kind == "object.end" else None
        return Event(kind, at, track.first_seen, end, data, id=track.id)


class CameraEvents:
    """Vision's event source: camera results -> ObjectTracker -> EventDelivery (only with a camera and a broker)."""

    def __init__(
        self,
        settings: EventsSettings | None,
        registry: CollectorRegistry,
        capture: CaptureSettings | None,
        detector: Any,
    ) -> None:
        camera = capture is not None and capture.enabled
        self.why_not = None if camera else "no camera: vision events come from the camera loop"
        if settings is None or not settings.enabled:
            self.why_not = self.why_not or "no EVENTS_MQTT_URL"
        self.delivery = EventDelivery(settings, "vision", registry) if settings and not self.why_not else None
        settings = settings if settings is not None else EventsSettings.model_construct()  # defaults, no env
        self.tracker = ObjectTracker(settings.object_end_after_s, settings.object_update_interval_s, settings.labels)
        gate_skip = capture.motion_max_skip_s if capture is not None and capture.motion_min_change else 0.0
        self.idle_s = settings.object_end_after_s + gate_skip
        """No result for this long ends every open object: longer than the motion gate may skip inference."""
        self._detector = detector  # its `model` (None until loaded) names the model in every event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.delivery is not None

    def on_result(self, result: FrameResult) -> None:
        """The camera's inference thread, after each inferred frame."""
        if not self.active:
            return
        image = {"width": result.width, "height": result.height}
        with self._lock:
            events = self.tracker.observe(result.frame_ts, result.detections, image)
            self._emit(events)

    def _emit(self, events: list[Event]) -> None:
        assert self.delivery is not None
        loaded = getattr(self._detector, "model", None)
        model = {"name": loaded.entry.name, "sha256": loaded.sha256} if loaded is not None else None
        for event in events:
            if model is not None:
                event = Event(event.type, event.time, event.start_time, event.end_time, event.data, event.id, model)
            self.delivery.emit(event)

    def _expiry_loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._emit(self.tracker.expire(time.time(), self.idle_s))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Enter before the camera's hook, so that it stops after the camera and spools the last end events."""
        if not self.active:
            yield
            return
        assert self.delivery is not None
        self.delivery.start()
        self._thread = threading.Thread(target=self._expiry_loop, name="object-events-expiry", daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, 2)
            with self._lock:
                self._emit(self.tracker.close())
            await asyncio.to_thread(self.delivery.stop)

    def status(self) -> dict[str, Any]:
        if self.delivery is None:
            return {"enabled": False, "state": "disabled", "reason": self.why_not}
        return {**self.delivery.status(), "open_objects": self.tracker.open_labels}
