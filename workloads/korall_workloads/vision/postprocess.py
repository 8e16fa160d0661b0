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
    """Detections with score >= score_th, best first, at most topk, boxes clipped to the image of `image_size`.

    At most a few dozen rows: after a single numpy conversion per tensor, plain Python lists are cheaper than
    further numpy calls (this runs on every request, right after an invoke has evicted the caches).
    """
    score_list = np.asarray(scores).astype(np.float32, copy=False).ravel().tolist()
    box_rows = np.asarray(boxes).astype(np.float32, copy=False).reshape(-1, 4).tolist()
    class_ids = np.asarray(classes).ravel().tolist()
    n = min(int(np.asarray(count).ravel()[0]), len(score_list), len(box_rows), len(class_ids))
    if n <= 0 or topk <= 0:
        return []
    threshold = float(np.float32(score_th))  # compared in float32, as the model's scores are
    keep = [i for i in range(n) if score_list[i] >= threshold]
    if not keep:
        return []
    keep.sort(key=score_list.__getitem__, reverse=True)  # stable: equal scores keep the model's order
    del keep[topk:]
    width, height = image_size
    out = []
    for i in keep:
        ymin, xmin, ymax, xmax = (min(max(v, 0.0), 1.0) for v in box_rows[i])
        class_id = int(class_ids[i])
        out.append(
            Detection(
                label=label_for(labels, class_id),
                class_id=class_id,
                score=score_list[i],
                box=Box(
                    xmin=round(xmin * width, 1),
                    ymin=round(ymin * height, 1),
                    xmax=round(xmax * width, 1),
                    ymax=round(ymax * height, 1),
                ),
                box_norm=Box(xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax),
            )
        )
    return out
