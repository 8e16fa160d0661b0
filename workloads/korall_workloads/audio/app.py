"""The HTTP side of the audio service: health, readiness, recent and live events, chunk features, metrics.

Handlers only read from the capture service and the event hub and raise domain errors; `common.responses` maps
them to the shared JSON error shape. The capture thread starts with the app and stops with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from korall_workloads.audio.capture import CaptureService, CaptureState, default_source
from korall_workloads.audio.event_delivery import AudioEvents
from korall_workloads.audio.events import EventType
from korall_workloads.audio.hub import EventHub
from korall_workloads.audio.metrics import AudioMetrics
from korall_workloads.audio.settings import AudioSettings
from korall_workloads.audio.source import AudioSource
from korall_workloads.audio.vad import SileroVad, SpeechDetector
from korall_workloads.common.broadcast import Subscription, end_streams_on_exit_signals
from korall_workloads.common.event_settings import EventsSettings
from korall_workloads.common.guard import NO_TELEMETRY, install_http_guard
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.common.pages import mount_page
from korall_workloads.common.responses import install_error_handlers

READY_STATES = (CaptureState.CAPTURING, CaptureState.FINISHED)


def _client(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


TypeFilter = Annotated[list[EventType] | None, Query(alias="type", description="Only these event types.")]


def create_app(
    settings: AudioSettings,
    *,
    source_factory: Callable[[AudioSettings], AudioSource] = default_source,
    vad_factory: Callable[[], SpeechDetector] = SileroVad,
    events_settings: EventsSettings | None = None,
    http: HttpSettings | None = None,
) -> FastAPI:
    """`events_settings` with a broker sends every event there too (None or no EVENTS_MQTT_URL: no delivery);
    `http`: tokens, rate limits, access log, live streams per client (`common.guard`; None: defaults without auth or
    rate limits)."""
    http = http if http is not None else HttpSettings.without_rate_limits()
    metrics = AudioMetrics()
    delivery = AudioEvents(events_settings, metrics.registry)
    hub = EventHub(
        on_drop=metrics.sse_dropped.inc, on_publish=delivery.on_record, max_per_client=http.streams_per_client
    )
    capture = CaptureService(settings, hub, metrics, source_factory=source_factory, vad_factory=vad_factory)
    delivery.audio_clock = lambda: capture.audio_s

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        delivery.start()
        capture.start()
        restore = end_streams_on_exit_signals(hub.close)
        try:
            yield
        finally:
            restore()
            capture.stop()
            await asyncio.to_thread(delivery.stop)  # after the capture: its last events are spooled first

    app = FastAPI(title="korall audio", version="0.1.0", lifespan=lifespan, telemetry=NO_TELEMETRY)
    app.state.capture = capture
    app.state.hub = hub
    app.state.events = delivery
    app.state.metrics = metrics
    install_error_handlers(app, on_error=lambda code: metrics.http_errors.labels(code).inc())
    app.state.tokens = install_http_guard(app, http, on_error=lambda code: metrics.http_errors.labels(code).inc())

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: RFC 9110 (curl -I), the body dropped by uvicorn
    def health() -> dict[str, Any]:
        """Always answers: the process is alive; `capture` says what the source is doing and why not.

        `degraded` with `capture.error` while the source fails, or with `capture.warning` after a WAV file that was
        cut short has been processed (once, up to where it ends).
        """
        status = capture.status()
        healthy = status["error"] is None and status["warning"] is None
        body = {"status": "ok" if healthy else "degraded", "capture": status}
        return {**body, "events": delivery.status()}

    @app.api_route("/ready", methods=["GET", "HEAD"])
    def ready() -> dict[str, Any]:
        """200 once audio flows (or a WAV replay has been fully processed), else 503 with the reason."""
        status = capture.require_ready()
        return {"ready": True, "state": status["state"]}

    @app.get("/events")
    def events(
        types: TypeFilter = None,
        since_s: Annotated[float | None, Query(ge=0, description="Only events ending at or after (audio s).")] = None,
        after_id: Annotated[int, Query(ge=0, description="Only events with a larger id (for polling).")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Recent events, oldest first (the service keeps the last 1000)."""
        items = hub.recent(set(types) if types else None, since_s, after_id, limit)
        return {"events": items, "count": len(items)}

    async def live_place(request: Request, types: TypeFilter = None) -> AsyncIterator[Subscription]:
        """A place among the live clients, taken before the stream starts (none left: a 503 with the JSON error,
        not an error after a 200 has gone out) and given back when the request ends, however it ends.

        A dependency's teardown runs when the request is done, also when the client was dropped mid-stream (a
        slow reader, HTTP_SEND_TIMEOUT_S); the stream's own `finally` would wait for the garbage collector when
        the stream is stuck in a `yield` at that moment.
        """
        sub = hub.join(set(types) if types else None, _client(request))
        try:
            yield sub
        finally:
            hub.unsubscribe(sub)

    @app.get("/events/stream", response_class=EventSourceResponse)
    async def stream(
        types: TypeFilter = None,
        last_event_id: Annotated[int | None, Header(ge=0, description="Resume after this event id.")] = None,
        sub: Subscription = Depends(live_place),  # noqa: B008 (not Annotated: live_place is local to create_app)
    ) -> AsyncIterator[ServerSentEvent]:
        """Live events as Server-Sent Events (`event:` is the type, `id:` the event id, `data:` the JSON record).

        A client that reconnects with `Last-Event-ID` (browsers' EventSource does) first gets the events it missed
        that are still in the history. Each client has a bounded queue; a client too slow to drain it loses its
        oldest events (counted in korall_audio_sse_dropped_total). FastAPI sends keep-alive comments meanwhile.
        One client address holds at most HTTP_STREAMS_PER_CLIENT streams; a client that reads nothing for
        HTTP_SEND_TIMEOUT_S once the buffers are full is dropped and its place freed.
        """
        wanted: set[str] | None = set(types) if types else None
        sent = last_event_id or 0  # subscribed (live_place) before the history is read: nothing falls in between
        if last_event_id is not None:
            for record in hub.recent(wanted, after_id=last_event_id, limit=hub.max_events):
                sent = record["id"]
                yield ServerSentEvent(data=record, event=record["type"], id=str(record["id"]))
        while True:
            record = await sub.queue.get()
            if record is None:  # the service is shutting down
                return
            if record["id"] > sent:
                yield ServerSentEvent(data=record, event=record["type"], id=str(record["id"]))

    async def level_place(request: Request) -> AsyncIterator[Subscription]:
        """A place among the level stream's clients, like `live_place` (503 before the stream, freed at its end)."""
        sub = hub.levels.join(client=_client(request))
        try:
            yield sub
        finally:
            hub.levels.unsubscribe(sub)

    @app.get("/level/stream", response_class=EventSourceResponse)
    async def level_stream(
        sub: Subscription = Depends(level_place),  # noqa: B008 (not Annotated: level_place is local to create_app)
    ) -> AsyncIterator[ServerSentEvent]:
        """The live level, one `level` event per chunk: its dBFS and peak, the level of each 32 ms frame in it, and
        the events under way (`open`: type -> start) on the events' clock; the latest first. For the page's meter."""
        if (latest := hub.latest_level()) is not None:
            yield ServerSentEvent(data=latest, event="level")
        while (level := await sub.queue.get()) is not None:
            yield ServerSentEvent(data=level, event="level")

    @app.get("/chunks")
    def chunks(limit: Annotated[int, Query(ge=1, le=120)] = 10) -> dict[str, Any]:
        """Features of the most recent chunks (RMS, dBFS, peak, zero-crossing rate), oldest first."""
        return {"chunks": hub.recent_chunks(limit)}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    mount_page(app, "korall_workloads.audio")  # GET /: the timeline, the level meter and the state (static/)
    return app
