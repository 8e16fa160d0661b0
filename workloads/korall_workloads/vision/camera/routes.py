"""HTTP surface of the camera: latest detections, a live Server-Sent Events stream, an annotated snapshot.

The routes read the running pipeline from `app.state.camera` (None when no CAPTURE_SOURCE is set) and
raise the camera's domain errors below, which `common.responses` maps to the one JSON error shape. `run_camera`
is the lifespan piece the vision app enters: it starts the pipeline on the shared detector and stops it at
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from korall_contract import VisionEnv
from prometheus_client import CollectorRegistry

from korall_workloads.common.broadcast import Subscription, end_streams_on_exit_signals
from korall_workloads.common.errors import NotFound, Unavailable

from .pipeline import CameraPipeline, Detector, FrameResult, StreamEvent
from .settings import CaptureSettings
from .snapshot import EncodedFrames


class CameraNotConfigured(NotFound):
    """A camera route, but no CAPTURE_SOURCE."""

    code = "camera_not_configured"


class CameraUnavailable(Unavailable):
    """No frame has been processed yet: the camera is connecting, reconnecting or failed."""

    code = "camera_unavailable"


class CameraNotReady(Unavailable):
    """For /ready: the camera is configured but frames are not streaming."""

    code = "not_ready"


@contextlib.asynccontextmanager
async def run_camera(
    app: FastAPI,
    detector: Detector,
    registry: CollectorRegistry,
    settings: CaptureSettings | None = None,
    on_result: Callable[[FrameResult], None] | None = None,
) -> AsyncIterator[CameraPipeline | None]:
    """Start the camera pipeline for the app's lifetime when CAPTURE_SOURCE is set (else app.state.camera = None).

    `on_result` is called on the inference thread after each inferred frame (the object events' feed)."""
    settings = settings if settings is not None else CaptureSettings()
    pipeline = CameraPipeline(settings, detector, registry, on_result=on_result) if settings.enabled else None
    app.state.camera = pipeline
    app.state.camera_jpegs = EncodedFrames()
    if pipeline is None:
        yield None
        return
    pipeline.broadcaster.max_per_client = getattr(app.state, "streams_per_client", None)
    pipeline.start()
    restore = end_streams_on_exit_signals(pipeline.broadcaster.close)
    try:
        yield pipeline
    finally:
        restore()
        await asyncio.to_thread(pipeline.stop)


def camera_lifespan(
    detector: Detector,
    registry: CollectorRegistry,
    settings: CaptureSettings,
    on_result: Callable[[FrameResult], None] | None = None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan hook for `create_app`: runs the camera on the app's detector and metrics registry."""

    @contextlib.asynccontextmanager
    async def hook(app: FastAPI) -> AsyncIterator[None]:
        async with run_camera(app, detector, registry, settings, on_result):
            yield

    return hook


def camera_status(app: FastAPI) -> dict[str, Any] | None:
    """The camera block for /health and /ready: None when no camera is configured."""
    pipeline: CameraPipeline | None = getattr(app.state, "camera", None)
    return None if pipeline is None else pipeline.status()


def require_camera_ready(app: FastAPI) -> dict[str, Any] | None:
    """The camera's part of /ready: None without a camera, its status while frames stream, else CameraNotReady."""
    pipeline: CameraPipeline | None = getattr(app.state, "camera", None)
    if pipeline is None:
        return None
    status = pipeline.status()
    if not pipeline.streaming:
        raise CameraNotReady(f"camera {status['state']}: {status['reason']}")
    return status


def _pipeline(request: Request) -> CameraPipeline:
    pipeline: CameraPipeline | None = getattr(request.app.state, "camera", None)
    if pipeline is None:
        hint = f"set {VisionEnv.CAPTURE_SOURCE} to a device, URL or video file"
        raise CameraNotConfigured(f"no camera configured; {hint}")
    return pipeline


def _latest(pipeline: CameraPipeline) -> FrameResult:
    result = pipeline.latest()
    if result is None:
        state = pipeline.tracker.current
        raise CameraUnavailable(f"no camera frame has been processed yet (camera {state.state}: {state.reason})")
    return result


def _sse(event: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(raw_data=event.data, event="detections", id=str(event.frame_index))


router = APIRouter(tags=["camera"])


@router.get("/camera")
def get_camera(request: Request) -> dict[str, Any]:
    """State, requested and negotiated profile, and counters of the camera."""
    return _pipeline(request).status()


@router.get("/detections")
def get_detections(request: Request) -> dict[str, Any]:
    """The latest camera result: frame index and timestamp, detections, timings."""
    pipeline = _pipeline(request)
    body = _latest(pipeline).as_json()
    body["camera"] = {"state": str(pipeline.tracker.current.state)}
    return body


def _client(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


async def _live_place(request: Request) -> AsyncIterator[tuple[CameraPipeline, Subscription]]:
    """The pipeline and a place among its live clients, taken before the stream starts (refused: 503 with the JSON
    error) and given back when the request ends however it ends, a client dropped for not reading included (a
    dependency's teardown runs then; the stream's own `finally` might wait for the garbage collector)."""
    pipeline = _pipeline(request)
    subscription = pipeline.broadcaster.join(client=_client(request))
    try:
        yield pipeline, subscription
    finally:
        pipeline.broadcaster.unsubscribe(subscription)


@router.get("/detections/stream", response_class=EventSourceResponse)
async def stream_detections(
    place: Annotated[tuple[CameraPipeline, Subscription], Depends(_live_place)],
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: one `detections` event per inferred frame; a slow client skips results, never blocks.

    FastAPI's SSE response sends keep-alive comments while no result comes. One client address holds at most
    HTTP_STREAMS_PER_CLIENT streams (503 `too_many_clients` beyond); a client that stops reading is dropped.
    """
    pipeline, subscription = place
    last_sent = -1
    current = pipeline.latest()
    if current is not None:
        last_sent = current.frame_index
        yield _sse(current.stream_event())
    while True:
        item = await subscription.queue.get()
        if item is None:  # the pipeline stopped
            return
        if item.frame_index <= last_sent:
            continue
        last_sent = item.frame_index
        yield _sse(item)


@router.get("/snapshot.jpg", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def get_snapshot(
    request: Request,
    boxes: bool = Query(True, description="draw the detections"),
    quality: int = Query(85, ge=10, le=100),
) -> Response:
    """The latest inferred frame as JPEG, with its detections drawn (`boxes=false`: as captured; the live page draws
    the boxes itself from /detections/stream). `X-Frame-Index` names the frame, which the stream's events carry too.
    """
    result = _latest(_pipeline(request))
    jpegs: EncodedFrames = request.app.state.camera_jpegs
    data = jpegs.jpeg(result.frame_index, result.image, result.detections, boxes=boxes, quality=quality)
    headers = {
        "X-Frame-Index": str(result.frame_index),
        "X-Frame-Timestamp": f"{result.frame_ts:.3f}",
        "Cache-Control": "no-store",  # a live picture: never the one a cache kept
    }
    return Response(data, media_type="image/jpeg", headers=headers)
