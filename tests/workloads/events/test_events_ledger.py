"""The consumer's bookkeeping: de-duplication by (source, sequence), gaps, late arrivals, evicted ranges."""

from __future__ import annotations

from typing import Any

from korall_workloads.events.ledger import Ledger


def event(seq: int, name: str = "cam", node: str = "n1") -> dict[str, Any]:
    return {"seq": seq, "source": {"namespace": "ns", "name": name, "node": node, "service": "vision"}}


def test_duplicates_are_recognised_per_source() -> None:
    ledger = Ledger()
    verdicts = [ledger.event(event(s)).verdict for s in (1, 2, 3, 2, 3, 4)]
    assert verdicts == ["new", "new", "new", "duplicate", "duplicate", "new"]
    assert ledger.event(event(2, node="n2")).verdict == "new"  # another node is another source
    summary = ledger.summary()["ns/cam/n1"]
    assert (summary["received"], summary["duplicates"], summary["missing"]) == (4, 2, 0)
    assert ledger.complete


def test_a_skipped_number_is_a_gap_at_once_and_a_late_arrival_fills_it() -> None:
    ledger = Ledger()
    ledger.event(event(1))
    jump = ledger.event(event(5))
    assert jump.verdict == "new" and jump.gap == (2, 4)
    assert not ledger.complete and ledger.summary()["ns/cam/n1"]["missing_ranges"] == [[2, 4]]
    assert ledger.event(event(3)).verdict == "late"
    assert ledger.summary()["ns/cam/n1"]["missing_ranges"] == [[2, 2], [4, 4]]
    ledger.event(event(2))
    ledger.event(event(4))
    assert ledger.complete and ledger.summary()["ns/cam/n1"]["late"] == 3


def test_without_from_seq_the_first_event_seen_is_the_start() -> None:
    ledger = Ledger()
    ledger.event(event(41))
    ledger.event(event(42))
    assert ledger.complete and ledger.summary()["ns/cam/n1"]["first"] == 41
    strict = Ledger(from_seq=1)
    assert strict.event(event(41)).gap == (1, 40)
    assert strict.summary()["ns/cam/n1"]["missing"] == 40


def test_the_heartbeat_explains_evicted_gaps_and_what_the_source_still_holds() -> None:
    ledger = Ledger(from_seq=1)
    for seq in [1, 2, *range(33, 41)]:
        ledger.event(event(seq))
    ledger.heartbeat(
        {
            **event(0),
            "last_seq": 45,
            "spool_depth": 5,
            "evicted_ranges": [{"first_seq": 3, "last_seq": 32, "reason": "max_events", "at": 0.0}],
        }
    )
    summary = ledger.summary()["ns/cam/n1"]
    assert summary["missing"] == 30 and summary["missing_evicted_by_source"] == 30
    assert summary["not_yet_received"] == 5 and summary["source_spool_depth"] == 5
