"""SSD output decoding: the four TFLite_Detection_PostProcess tensors to labelled boxes in image pixels.

A pure function of numpy arrays, so it is tested without a model. Boxes come normalized as (ymin, xmin, ymax,
xmax) and may stray slightly outside 0..1; they are clipped. Class ids map through the labels file's id column
(COCO ids have gaps), then the score threshold and top-k apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: Box  # pixels of the image as sent
    box_norm: Box  # 0..1 of width and height


def label_for(labels: dict[int, str], class_id: int) -> str:
    return labels.get(class_id, f"class_{class_id}")


def decode_ssd(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: np.ndarray | float,
    *,
    labels: dict[int, str],
    image_size: tuple[int, int],
    score_th: float,
    topk: int,
) -> list[Detection]:
    """Detections with score >= score_th, best first, at most topk, boxes clipped to the image of `image_size`."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = min(int(np.asarray(count).reshape(-1)[0]), len(scores), len(boxes), len(classes))
    if n <= 0 or topk <= 0:
        return []
    scores = scores[:n]
    keep = np.flatnonzero(scores >= score_th)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:topk]
    width, height = image_size
    clipped = np.clip(boxes[keep], 0.0, 1.0)
    out = []
    for i, (ymin, xmin, ymax, xmax) in zip(keep, clipped, strict=True):
        class_id = int(classes[i])
        norm = Box(xmin=float(xmin), ymin=float(ymin), xmax=float(xmax), ymax=float(ymax))
        px = Box(
            xmin=round(float(xmin) * width, 1),
            ymin=round(float(ymin) * height, 1),
            xmax=round(float(xmax) * width, 1),
            ymax=round(float(ymax) * height, 1),
        )
        out.append(
            Detection(
                label=label_for(labels, class_id), class_id=class_id, score=float(scores[i]), box=px, box_norm=norm
            )
        )
    return out
