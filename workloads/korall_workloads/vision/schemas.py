"""The JSON the vision API returns: pydantic models document it in /docs; /infer writes it with `json`.

Building and dumping the pydantic models cost /infer about a tenth of a millisecond per request, on the path
between the end of the invoke and the reply, so `infer_response_json` writes the same document from plain
dicts; `test_infer_json_matches_the_documented_schema` holds the two together.
"""

from __future__ import annotations

import json
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


def _box(b: Any) -> dict[str, float]:
    return {"xmin": b.xmin, "ymin": b.ymin, "xmax": b.xmax, "ymax": b.ymax}


def infer_response_dict(result: DetectionResult, model: LoadedModel, fmt: str, nbytes: int) -> dict[str, Any]:
    """The /infer document (the shape of `InferResponse`) as plain JSON-ready data."""
    t = result.timings
    return {
        "detections": [
            {
                "label": d.label,
                "class_id": d.class_id,
                "score": round(d.score, 4),
                "box": _box(d.box),
                "box_norm": _box(d.box_norm),
            }
            for d in result.detections
        ],
        "image": {"width": result.width, "height": result.height, "format": fmt, "bytes": nbytes},
        "model": {
            "name": model.entry.name,
            "file": model.entry.file,
            "sha256": model.sha256,
            "accelerator": model.accelerator,
        },
        "timings_ms": {
            "decode": round(t.decode_ms, 3),
            "preprocess": round(t.preprocess_ms, 3),
            "queue": round(t.queue_ms, 3),
            "invoke": round(t.invoke_ms, 3),
            "postprocess": round(t.postprocess_ms, 3),
            "total": round(t.total_ms, 3),
        },
    }


def infer_response_json(result: DetectionResult, model: LoadedModel, fmt: str, nbytes: int) -> bytes:
    """The /infer reply body: compact UTF-8 JSON, as pydantic's `model_dump_json` would write it."""
    return json.dumps(
        infer_response_dict(result, model, fmt, nbytes), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()
