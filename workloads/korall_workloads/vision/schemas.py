"""The JSON the vision API returns, as pydantic models (they also document the API in /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .detector import DetectionResult
from .runtime import LoadedModel


class BoxOut(BaseModel):
    xmin: float
    ymin: float
    xmax: float
    ymax: float


class DetectionOut(BaseModel):
    label: str
    class_id: int
    score: float
    box: BoxOut = Field(description="Pixels of the image as sent (after EXIF orientation).")
    box_norm: BoxOut = Field(description="Fractions 0..1 of the image width and height.")


class ImageOut(BaseModel):
    width: int
    height: int
    format: str
    bytes: int


class ModelOut(BaseModel):
    name: str
    file: str
    sha256: str
    accelerator: str


class TimingsOut(BaseModel):
    decode: float
    preprocess: float
    queue: float = Field(description="Waiting for the interpreter while other images ran.")
    invoke: float
    postprocess: float
    total: float = Field(description="From the body received to the reply built.")


class InferResponse(BaseModel):
    detections: list[DetectionOut]
    image: ImageOut
    model: ModelOut
    timings_ms: TimingsOut


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _box(b: Any) -> BoxOut:
    return BoxOut(xmin=b.xmin, ymin=b.ymin, xmax=b.xmax, ymax=b.ymax)


def infer_response(result: DetectionResult, model: LoadedModel, fmt: str, nbytes: int) -> InferResponse:
    t = result.timings
    return InferResponse(
        detections=[
            DetectionOut(
                label=d.label, class_id=d.class_id, score=round(d.score, 4), box=_box(d.box), box_norm=_box(d.box_norm)
            )
            for d in result.detections
        ],
        image=ImageOut(width=result.width, height=result.height, format=fmt, bytes=nbytes),
        model=ModelOut(
            name=model.entry.name, file=model.entry.file, sha256=model.sha256, accelerator=model.accelerator
        ),
        timings_ms=TimingsOut(
            decode=round(t.decode_ms, 3),
            preprocess=round(t.preprocess_ms, 3),
            queue=round(t.queue_ms, 3),
            invoke=round(t.invoke_ms, 3),
            postprocess=round(t.postprocess_ms, 3),
            total=round(t.total_ms, 3),
        ),
    )
