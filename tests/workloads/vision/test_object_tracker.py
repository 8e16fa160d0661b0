"""The object-event rules on plain detection lists (no camera, no clock): new, update, end, one id across them."""

from __future__ import annotations

from typing import Any

from korall_workloads.vision.object_events import ObjectTracker

IMAGE = {"width": 640, "height": 480}


def det(label: str, score: float, x: float = 10.0) -> dict[str, Any]:
    box = {"xmin": x, "ymin": 20.0, "xmax": x + 100, "ymax": 220.0}
    norm = {"xmin": x / 640, "ymin": 20 / 480, "xmax": (x + 100) / 640, "ymax": 220 / 480}
    return {"label": label, "class_id": 17, "score": score, "box": box, "box_norm": norm}


def test_a_label_that_appears_starts_an_event_with_that_detection() -> None:
    tracker = ObjectTracker(end_after_s=1.0, update_interval_s=0.0)
    (new,) = tracker.observe(100.0, [det("cat", 0.7, x=33)], IMAGE)
    assert new.type == "object.new" and new.start_time == new.time == 100.0 and new.end_time is None
    assert new.data["label"] == "cat" and new.data["best"]["score"] == 0.7 and new.data["best"]["box"]["xmin"] == 33
    assert new.data["end_reason"] is None and new.data["image"] == IMAGE
    assert tracker.observe(100.1, [det("cat", 0.6)], IMAGE) == []  # no better score: nothing to say


def test_updates_carry_the_best_score_and_box_at_most_every_interval() -> None:
    tracker = ObjectTracker(end_after_s=5.0, update_interval_s=1.0)
    (new,) = tracker.observe(0.0, [det("cat", 0.6)], IMAGE)
    assert tracker.observe(0.5, [det("cat", 0.8, x=50)], IMAGE) == []  # better, but within the interval
    assert tracker.observe(0.9, [det("cat", 0.7)], IMAGE) == []
    (update,) = tracker.observe(1.2, [det("cat", 0.65, x=90)], IMAGE)  # the interval passed: the pending best goes out
    assert update.type == "object.update" and update.id == new.id
    assert update.data["best"]["score"] == 0.8 and update.data["best"]["box"]["xmin"] == 50
    assert update.data["last"]["score"] == 0.65 and update.data["last"]["box"]["xmin"] == 90
    assert update.data["frames"] == 4
    assert tracker.observe(2.5, [det("cat", 0.7)], IMAGE) == []  # nothing better since


def test_an_object_ends_once_absent_for_the_configured_time_with_the_same_id() -> None:
    tracker = ObjectTracker(end_after_s=1.0, update_interval_s=0.0)
    (new,) = tracker.observe(10.0, [det("cat", 0.7)], IMAGE)
    tracker.observe(10.4, [det("cat", 0.9)], IMAGE)
    assert tracker.observe(11.0, [], IMAGE) == []  # absent 0.6 s
    assert tracker.observe(11.3, [det("dog", 0.8)], IMAGE)[0].type == "object.new"
    (end,) = tracker.observe(11.4, [det("dog", 0.8)], IMAGE)  # absent 1.0 s: ended
    assert end.type == "object.end" and end.id == new.id and end.data["end_reason"] == "absent"
    assert end.start_time == 10.0 and end.end_time == end.time == 10.4 and end.data["best"]["score"] == 0.9
    (again,) = tracker.observe(12.0, [det("cat", 0.7)], IMAGE)
    assert again.type == "object.new" and again.id != new.id  # a new appearance is a new event


def test_one_event_per_label_counting_the_most_instances_seen_in_a_frame() -> None:
    tracker = ObjectTracker(end_after_s=1.0, update_interval_s=0.0)
    (new,) = tracker.observe(0.0, [det("person", 0.6), det("person", 0.8, x=300)], IMAGE)
    assert new.data["count"] == 2 and new.data["best"]["score"] == 0.8 and new.data["best"]["count"] == 2
    tracker.observe(0.5, [det("person", 0.7), det("person", 0.7), det("person", 0.9)], IMAGE)
    (end,) = tracker.observe(2.0, [], IMAGE)
    assert end.data["count"] == 3 and end.data["frames"] == 2


def test_only_the_configured_labels_make_events() -> None:
    tracker = ObjectTracker(end_after_s=1.0, update_interval_s=0.0, labels=frozenset({"person"}))
    events = tracker.observe(0.0, [det("cat", 0.9), det("person", 0.6)], IMAGE)
    assert [e.data["label"] for e in events] == ["person"]


def test_no_results_at_all_end_every_object_and_shutdown_ends_the_rest() -> None:
    tracker = ObjectTracker(end_after_s=1.0, update_interval_s=0.0)
    tracker.observe(0.0, [det("cat", 0.7), det("dog", 0.6)], IMAGE)
    assert tracker.expire(now=1.5, idle_s=2.0) == []
    ended = tracker.expire(now=2.5, idle_s=2.0)
    assert sorted(e.data["label"] for e in ended) == ["cat", "dog"]
    assert {e.data["end_reason"] for e in ended} == {"no_frames"} and tracker.open_labels == []
    tracker.observe(3.0, [det("cat", 0.7)], IMAGE)
    (closed,) = tracker.close()
    assert closed.type == "object.end" and closed.data["end_reason"] == "shutdown" and closed.end_time == 3.0
