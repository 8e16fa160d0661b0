"""The vision service's HTTP layer: thin routes over the Detector; errors are mapped in `common.responses`.

The event loop never does heavy work: the upload is read with a limit while it streams, then decoding,
resizing and inference run on one of the detector's worker threads. That keeps /health instant during any
inference and lets the next request decode while the current one is invoked.

The model loads in the background when the app starts: /health answers from the first moment and reports
the load state (including why it failed); /ready turns 200 only after a warm-up inference passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from korall_workloads.common.accesslog import ACCESS_DETAIL_KEY
from korall_workloads.common.errors import InvalidInput
from korall_workloads.common.event_settings import EventsSettings
from korall_workloads.common.guard import NO_TELEMETRY, install_http_guard
from korall_workloads.common.http_settings import HttpSettings
from korall_workloads.common.pages import mount_page
from korall_workloads.common.responses import install_error_handlers

from .admission import Admission
from .camera import CaptureSettings, camera_lifespan, camera_status, require_camera_ready
from .camera import router as camera_router
from .catalog import list_models
from .detector import Detector
from .metrics import VisionMetrics
from .object_events import CameraEvents
from .schemas import ErrorResponse, InferResponse, infer_response_json
from .settings import VisionSettings
from .upload import read_image_bytes

log = logging.getLogger(__name__)

LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "empty body, malformed multipart, corrupt image",
        401: "no token, or not a valid one (with AUTH_TOKENS_FILE)",
        403: "the token lacks the infer scope",
        408: "the body did not arrive within HTTP_BODY_TIMEOUT_S",
        413: "upload over MAX_UPLOAD_BYTES, image over MAX_IMAGE_PIXELS or its decode over DECODE_BUDGET_BYTES",
        415: "unsupported media type",
        422: "not a decodable image, or a bad query parameter",
        429: "over a rate limit (Retry-After)",
        503: "model not loaded yet, or failed to load; or overloaded (Retry-After)",
        504: "inference past INFER_TIMEOUT_S",
    }.items()
}

SCORE_TH_BOUNDS = (0.0, 1.0)
TOPK_BOUNDS = (1, 100)

# /infer reads its query itself (see _infer_overrides); this documents it in /docs as Query() would.
_INFER_QUERY_DOCS: dict[str, Any] = {
    "parameters": [
        {
            "name": "score_th",
            "in": "query",
            "required": False,
            "description": "Minimum score (default SCORE_TH).",
            "schema": {"type": "number", "minimum": SCORE_TH_BOUNDS[0], "maximum": SCORE_TH_BOUNDS[1]},
        },
        {
            "name": "topk",
            "in": "query",
            "required": False,
            "description": "Most detections (default TOPK).",
            "schema": {"type": "integer", "minimum": TOPK_BOUNDS[0], "maximum": TOPK_BOUNDS[1]},
        },
    ]
}


def _infer_overrides(request: Request) -> tuple[float | None, int | None]:
    """`score_th` and `topk` from the query string, or None; a value that is not a number in bounds is a 422."""
    query = request.query_params
    score_th: float | None = None
    topk: int | None = None
    if (raw := query.get("score_th")) is not None:
        try:
            score_th = float(raw)
        except ValueError:
            raise InvalidInput(f"query.score_th: not a number: {raw!r}") from None
        low, high = SCORE_TH_BOUNDS
        if not low <= score_th <= high:
            raise InvalidInput(f"query.score_th: must be between {low:g} and {high:g}, got {raw!r}")
    if (raw := query.get("topk")) is not None:
        try:
            topk = int(raw)
        except ValueError:
            raise InvalidInput(f"query.topk: not an integer: {raw!r}") from None
        low_k, high_k = TOPK_BOUNDS
        if not low_k <= topk <= high_k:
            raise InvalidInput(f"query.topk: must be between {low_k} and {high_k}, got {raw!r}")
    return score_th, topk


def create_app(
    settings: VisionSettings,
    detector: Detector | None = None,
    lifespan_hooks: list[LifespanHook] | None = None,
    capture: CaptureSettings | None = None,
    events_settings: EventsSettings | None = None,
    http: HttpSettings | None = None,
) -> FastAPI:
    """Build the app. Pass `detector` to share an already loaded one (tests, benches); it is then not closed here.

    `lifespan_hooks` are async context managers entered after the model starts loading and exited at shutdown:
    the place for background work such as the camera loop.

    `capture` with a source runs the camera loop on the same detector (None or no CAPTURE_SOURCE: no camera).
    `events_settings` with a broker sends the camera's object events there (None or no EVENTS_MQTT_URL: no delivery).
    `http`: tokens, rate limits, access log (`common.guard`; None: defaults without auth or rate limits).
    """
    http = http if http is not None else HttpSettings.without_rate_limits()
    metrics = VisionMetrics()
    owns_detector = detector is None
    det = detector if detector is not None else Detector(settings)
    det.on_invoke = metrics.invoke_seconds.observe
    hooks: list[LifespanHook] = list(lifespan_hooks or [])

    # --- Camera ingest attaches here --------------------------------------------------------------------------
    # The camera package's routes are always there; with a capture source, its lifespan hook runs the capture
    # loop on `det` (the same Detector /infer uses) and reports to this app's metrics registry.
    routers: list[Any] = [camera_router]  # always: without a camera its routes answer 404 with a hint
    object_events = CameraEvents(events_settings, metrics.registry, capture, det)
    if capture is not None and capture.enabled:
        hooks.append(object_events.lifespan)  # first in, last out: spools the camera's final end events
        hooks.append(camera_lifespan(det, metrics.registry, capture, object_events.on_result))
    # -----------------------------------------------------------------------------------------------------------

    async def _publish_model_info() -> None:
        await asyncio.wrap_future(det.start_loading())
        if det.ready and det.model is not None:
            m = det.model
            metrics.model_info.info(
                {"name": m.entry.name, "file": m.entry.file, "sha256": m.sha256, "accelerator": m.accelerator}
            )
            metrics.model_ready.set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        det.start_loading()
        publisher = asyncio.create_task(_publish_model_info())
        async with contextlib.AsyncExitStack() as stack:
            for hook in hooks:
                await stack.enter_async_context(hook(app))
            yield
        publisher.cancel()
        if owns_detector:
            await asyncio.to_thread(det.close)

    app = FastAPI(
        title="korall vision",
        summary="SSD MobileNet v2 object detection on LiteRT (Edge TPU or CPU)",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.detector = det
    app.state.metrics = metrics
    app.state.lifespan_hooks = hooks
    app.state.streams_per_client = http.streams_per_client
    admission = Admission(settings.resolved_infer_queue_max, settings.upload_budget_bytes)
    app.state.admission = admission
    install_error_handlers(app, metrics.on_error)
    app.state.tokens = install_http_guard(  # outermost: every route and mount, refusals logged and counted too
        app,
        http,
        model_sha256=lambda: det.model.sha256 if det.model is not None else None,
        on_error=metrics.on_error,
        on_response=metrics.count_response,
    )

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: RFC 9110 (curl -I), the body dropped by uvicorn
    async def health() -> dict[str, Any]:
        """Always 200 at once; `model.state` is loading, ready or failed (with `model.error`); `camera` if any."""
        body: dict[str, Any] = {"status": "ok" if det.ready else det.state.value, "model": det.status()}
        if (camera := camera_status(app)) is not None:
            body["camera"] = camera
        body["events"] = object_events.status()
        return body

    @app.api_route("/ready", methods=["GET", "HEAD"], responses={503: _ERRORS[503]})
    async def ready() -> dict[str, Any]:
        """200 once the model is loaded and a warm-up inference passed; 503 before, or if loading failed."""
        det.require_ready()
        camera = require_camera_ready(app)
        return {"ready": True} if camera is None else {"ready": True, "camera": camera["state"]}

    @app.post("/infer", response_model=InferResponse, responses=_ERRORS, openapi_extra=_INFER_QUERY_DOCS)
    async def infer(request: Request) -> Response:
        """Detect objects in an image sent as the raw body (image/jpeg, image/png...) or a multipart 'file' part.

        Optional query parameters `score_th` (0..1, default SCORE_TH) and `topk` (1..100, default TOPK).
        """
        # The query is parsed here rather than by FastAPI's Query() dependencies: same bounds and the same 422
        # error, at a tenth of the cost on every request.
        score_th, topk = _infer_overrides(request)
        model = det.require_ready()
        with admission.admit() as ticket:  # 503 overloaded past INFER_QUEUE_MAX or UPLOAD_BUDGET_BYTES
            data = await read_image_bytes(
                request, settings.max_upload_bytes, ticket=ticket, timeout_s=http.body_timeout_s
            )
            nbytes = len(data)
            started = time.perf_counter()
            try:
                result, image = await det.detect_encoded(
                    data,
                    max_pixels=settings.max_image_pixels,
                    decode_budget=settings.decode_budget_bytes,
                    score_th=score_th,
                    topk=topk,
                    started=started,
                    timeout_s=settings.infer_timeout_s,
                )
            finally:
                del data  # the body goes before its ticket is released (which trims the heap after a large one)
        metrics.request_seconds.observe(time.perf_counter() - started)
        # What the access line of this request adds (common.accesslog): the image and where its time went.
        request.scope[ACCESS_DETAIL_KEY] = {
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "detections": len(result.detections),
            "invoke_ms": round(result.timings.invoke_ms, 2),
            "total_ms": round(result.timings.total_ms, 2),
        }
        # Written here, once, from plain dicts (see schemas.py): no pydantic validation on the way out.
        return Response(infer_response_json(result, model, image.format, nbytes), media_type="application/json")

    @app.get("/models")
    async def models() -> dict[str, Any]:
        """The .tflite files in MODELS_DIR: name, bytes, sha256, Edge TPU or not, and which one is active."""
        active = det.model.entry.path if det.model is not None else None
        found = await asyncio.to_thread(list_models, settings.models_dir, active)
        return {"models_dir": str(settings.models_dir), "models": found}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text exposition of this app's registry."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    mount_page(app, "korall_workloads.vision")  # GET /: the camera with its boxes, or an upload box (static/)
    return app
