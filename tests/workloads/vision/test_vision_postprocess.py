"""SSD output decoding on hand-built tensors: clipping, label ids with gaps, threshold, top-k, count."""

from __future__ import annotations

import numpy as np
from korall_workloads.vision.postprocess import decode_ssd

LABELS = {0: "person", 2: "car", 16: "cat"}  # ids with gaps, like coco_labels.txt


def _outputs(rows: list[tuple[tuple[float, float, float, float], int, float]], pad_to: int = 20):
    boxes = np.zeros((1, pad_to, 4), np.float32)
    classes = np.zeros((1, pad_to), np.float32)
    scores = np.zeros((1, pad_to), np.float32)
    for i, (box, cls, score) in enumerate(rows):
        boxes[0, i], classes[0, i], scores[0, i] = box, cls, score
    return boxes, classes, scores, np.array([len(rows)], np.float32)


def test_labels_go_through_the_id_column_and_boxes_scale_to_pixels() -> None:
    b, c, s, n = _outputs([((0.1, 0.2, 0.5, 0.6), 16, 0.9), ((0.0, 0.0, 1.0, 1.0), 2, 0.6)])
    dets = decode_ssd(b, c, s, n, labels=LABELS, image_size=(640, 480), score_th=0.5, topk=10)
    assert [(d.label, d.class_id) for d in dets] == [("cat", 16), ("car", 2)]
    cat = dets[0]
    assert (cat.box.xmin, cat.box.ymin, cat.box.xmax, cat.box.ymax) == (128.0, 48.0, 384.0, 240.0)
    assert cat.box_norm.xmin == np.float32(0.2)


def test_boxes_outside_the_image_are_clipped() -> None:
    b, c, s, n = _outputs([((-0.05, -0.1, 1.07, 1.2), 0, 0.8)])
    (d,) = decode_ssd(b, c, s, n, labels=LABELS, image_size=(100, 50), score_th=0.1, topk=5)
    assert (d.box_norm.xmin, d.box_norm.ymin, d.box_norm.xmax, d.box_norm.ymax) == (0.0, 0.0, 1.0, 1.0)
    assert (d.box.xmax, d.box.ymax) == (100.0, 50.0)


def test_threshold_topk_order_and_count() -> None:
    rows = [((0, 0, 0.5, 0.5), 0, sc) for sc in (0.3, 0.95, 0.7, 0.5, 0.49)]
    b, c, s, _ = _outputs(rows)
    dets = decode_ssd(b, c, s, np.array([5.0]), labels=LABELS, image_size=(10, 10), score_th=0.5, topk=2)
    assert [round(d.score, 2) for d in dets] == [0.95, 0.7]
    every = decode_ssd(b, c, s, np.array([5.0]), labels=LABELS, image_size=(10, 10), score_th=0.5, topk=10)
    assert [round(d.score, 2) for d in every] == [0.95, 0.7, 0.5]
    # count limits the valid rows: padding beyond it is ignored even with a high score
    s[0, 10] = 0.99
    limited = decode_ssd(b, c, s, np.array([2.0]), labels=LABELS, image_size=(10, 10), score_th=0.0, topk=10)
    assert [round(d.score, 2) for d in limited] == [0.95, 0.3]


def test_unknown_class_id_gets_a_visible_placeholder() -> None:
    b, c, s, n = _outputs([((0, 0, 1, 1), 77, 0.9)])
    (d,) = decode_ssd(b, c, s, n, labels=LABELS, image_size=(1, 1), score_th=0.5, topk=1)
    assert d.label == "class_77"


def test_zero_count_gives_nothing() -> None:
    b, c, s, _ = _outputs([((0, 0, 1, 1), 0, 0.9)])
    assert decode_ssd(b, c, s, np.array([0.0]), labels=LABELS, image_size=(5, 5), score_th=0.0, topk=5) == []
