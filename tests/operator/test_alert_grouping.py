"""The alerting's pure parts: the rules (a resource's status -> its alerts) and the grouping engine with
Alertmanager's group_wait / group_interval / repeat_interval, driven by an explicit clock (no sleeps)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from korall_operator.alerting.grouping import Engine
from korall_operator.alerting.mail import body, subject
from korall_operator.alerting.policy import AlertKey, Firing, Policy
from korall_operator.alerting.rules import epoch, firing_of

POLICY = Policy(
    severities={"CameraUnavailable": "critical", "InvalidSpec": "none"},
    default_severity="warning",
    not_ready_after_s=60,
    group_wait_s=30,
    group_interval_s=300,
    repeat_interval_s=4 * 3600,
    digest_after=10,
)
T0 = 1_750_000_000.0


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class View:
    name: str
    status: dict[str, Any] = field(default_factory=dict)
    kind: str = "InferenceModel"
    namespace: str = "shop"
    deleting: bool = False


def conditions(ready: tuple[str, str, float], degraded: tuple[str, str, float] | None = None) -> dict[str, Any]:
    conds = [
        {"type": "Ready", "status": ready[0], "reason": ready[1], "message": "m", "lastTransitionTime": iso(ready[2])}
    ]
    if degraded:
        conds.append({"type": "Degraded", "status": degraded[0], "reason": degraded[1], "message": "it broke",
                      "lastTransitionTime": iso(degraded[2])})  # fmt: skip
    return {"conditions": conds}


def fire(name: str, reason: str = "CrashLoopBackOff", severity: str = "critical", since: float = T0) -> Firing:
    return Firing(AlertKey("shop", "InferenceModel", name, reason), severity, f"{name} broke", since)


# ------------------------------------------------------------------------------------------------- rules


def test_a_degraded_resource_fires_its_reason_at_once_with_its_severity() -> None:
    view = View("cam", conditions(("False", "CameraUnavailable", T0), ("True", "CameraUnavailable", T0)))
    (alert,) = firing_of(view, T0 + 1, POLICY)
    assert alert.key == AlertKey("shop", "InferenceModel", "cam", "CameraUnavailable")
    assert (alert.severity, alert.message, alert.since) == ("critical", "it broke", T0)
    other = View("x", conditions(("False", "Unschedulable", T0), ("True", "Unschedulable", T0)))
    assert [a.severity for a in firing_of(other, T0, POLICY)] == ["warning"]  # the default severity


def test_not_ready_fires_only_after_its_threshold_and_never_for_what_runs_nothing() -> None:
    view = View("slow", conditions(("False", "RollingOut", T0), ("False", "AsExpected", T0)))
    assert firing_of(view, T0 + 59, POLICY) == []
    (alert,) = firing_of(view, T0 + 60, POLICY)
    assert alert.key.reason == "NotReady" and "RollingOut" in alert.message and alert.since == T0
    assert firing_of(View("video", conditions(("False", "NoWorkload", T0))), T0 + 999, POLICY) == []
    assert firing_of(View("fine", conditions(("True", "Available", T0))), T0 + 999, POLICY) == []
    assert firing_of(View("new"), T0, POLICY) == []  # never reconciled: nothing known


def test_a_reason_with_severity_none_and_a_resource_being_deleted_fire_nothing() -> None:
    bad = conditions(("False", "InvalidSpec", T0), ("True", "InvalidSpec", T0))
    assert firing_of(View("quiet", bad), T0, POLICY) == []
    crash = conditions(("False", "CrashLoopBackOff", T0), ("True", "CrashLoopBackOff", T0))
    assert firing_of(View("going", crash, deleting=True), T0, POLICY) == []
    assert epoch("not a time", 5.0) == 5.0


# ------------------------------------------------------------------------------------------------- grouping


def test_alerts_that_fire_together_go_out_in_one_mail_after_group_wait() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("a")], T0)
    engine.observe([fire("a"), fire("b")], T0 + 10)
    assert engine.due(T0 + 29.9) == []
    (n,) = engine.due(T0 + 30)
    assert [a.key.name for a in n.firing] == ["a", "b"] and n.new == {a.key for a in n.firing} and not n.repeat
    engine.delivered(n, T0 + 30)
    assert engine.due(T0 + 1000) == []  # nothing new: no mail until the repeat interval


def test_a_later_alert_waits_for_group_interval_and_the_repeat_lists_all() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("a")], T0)
    engine.delivered(engine.due(T0 + 30)[0], T0 + 30)
    engine.observe([fire("a"), fire("b")], T0 + 40)
    assert engine.next_due() == T0 + 30 + 300  # group_interval after the last mail (later than group_wait)
    assert engine.due(T0 + 329) == []
    (n,) = engine.due(T0 + 330)
    assert [a.key.name for a in n.firing] == ["b", "a"] and n.new == {fire("b").key}  # new ones first
    engine.delivered(n, T0 + 330)
    assert engine.due(T0 + 330 + 4 * 3600 - 1) == []
    (again,) = engine.due(T0 + 330 + 4 * 3600)
    assert again.repeat and again.new == frozenset() and len(again.firing) == 2
    assert "(still firing)" in subject(again)


def test_a_resolved_alert_sends_one_resolved_mail_and_ends_the_group() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("a")], T0)
    engine.delivered(engine.due(T0 + 30)[0], T0 + 30)
    engine.observe([], T0 + 100)
    assert engine.due(T0 + 329) == []
    (n,) = engine.due(T0 + 330)
    assert n.firing == () and [a.key.name for a in n.resolved] == ["a"] and n.resolved[0].resolved_at == T0 + 100
    assert subject(n) == "[korall] RESOLVED critical: CrashLoopBackOff on InferenceModel shop/a"
    engine.delivered(n, T0 + 330)
    assert engine.groups == {} and engine.due(T0 + 99999) == []
    engine.observe([fire("c")], T0 + 400)  # a new group: group_wait again, not group_interval
    assert engine.next_due() == T0 + 430


def test_a_flap_shorter_than_group_wait_is_never_mailed_and_a_refire_cancels_a_resolution() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("flap")], T0)
    engine.observe([], T0 + 5)
    assert engine.groups == {} and engine.due(T0 + 100) == []

    engine.observe([fire("a")], T0)
    engine.delivered(engine.due(T0 + 30)[0], T0 + 30)
    engine.observe([], T0 + 40)
    engine.observe([fire("a")], T0 + 50)  # back before its resolution went out
    assert engine.due(T0 + 10_000) == []  # no resolved mail, no new firing mail


def test_an_alert_whose_resource_is_unknown_does_not_resolve() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("a")], T0)
    engine.delivered(engine.due(T0 + 30)[0], T0 + 30)
    engine.observe([], T0 + 40, known=lambda key: False)
    assert all(a.firing for a in engine.alerts())
    engine.observe([], T0 + 50, known=lambda key: True)
    assert not any(a.firing for a in engine.alerts())

    engine.observe([fire("b")], T0 + 60)  # never mailed: its resource gone from the indexes, it goes too
    engine.observe([], T0 + 61, known=lambda key: False)
    assert fire("b").key not in {a.key for a in engine.alerts()}


def test_each_severity_is_its_own_group() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("a"), fire("b", "Unschedulable", "warning")], T0)
    due = engine.due(T0 + 30)
    assert sorted(n.group for n in due) == ["critical", "warning"]
    assert engine.firing_counts() == {"critical": 1, "warning": 1, "info": 0}


def test_fifty_alerts_in_one_group_make_one_digest() -> None:
    engine = Engine(POLICY)
    engine.observe([fire(f"m{i:02}", "CrashLoopBackOff" if i % 5 else "ImagePullBackOff") for i in range(50)], T0)
    (n,) = engine.due(T0 + 30)
    assert len(n.firing) == 50
    assert subject(n) == "[korall] FIRING 50 critical: CrashLoopBackOff (40), ImagePullBackOff (10)"
    text = body(n, digest_after=10)
    assert text.count("kubectl -n shop describe inferencemodel") == 10
    assert "... and 40 more: CrashLoopBackOff (32), ImagePullBackOff (8)" in text
    assert all(f"shop/m{i:02}" in text for i in range(50))  # every name is in it, the rest in short


def test_the_state_survives_a_restart_with_the_same_mail_ids() -> None:
    engine = Engine(POLICY)
    engine.observe([fire("a"), fire("b")], T0)
    engine.delivered(engine.due(T0 + 30)[0], T0 + 30)
    engine.observe([fire("a"), fire("b"), fire("c")], T0 + 35)  # c: not mailed yet, not in the snapshot
    saved = json.loads(json.dumps(engine.snapshot()))
    assert [r["key"] for r in saved["groups"]["critical"]["alerts"]] == [
        "shop/InferenceModel/a/CrashLoopBackOff",
        "shop/InferenceModel/b/CrashLoopBackOff",
    ]

    restarted = Engine(POLICY)
    assert restarted.restore(saved) == 2
    restarted.observe([fire("a"), fire("c")], T0 + 60)  # b resolved meanwhile; c still fires
    (n,) = restarted.due(T0 + 330)
    assert [a.key.name for a in n.firing] == ["c", "a"] and [a.key.name for a in n.resolved] == ["b"]
    assert n.new == {fire("c").key}

    again = Engine(POLICY)
    again.restore(saved)
    again.observe([fire("a"), fire("c")], T0 + 60)
    assert again.due(T0 + 330)[0].id == n.id  # the same mail after another restart: the same Message-ID
    with pytest.raises(ValueError, match="state version"):
        Engine(POLICY).restore({"version": 99})
