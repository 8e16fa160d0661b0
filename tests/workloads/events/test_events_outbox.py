"""The SQLite outbox on its own: sequence numbers, order, deletion on ack, the limits and their evictions.

Real SQLite files in a temporary folder; no broker is needed to check what the outbox promises.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from korall_workloads.common.outbox import DB_NAME, Outbox, SpoolError, SpoolLimits

ROOMY = SpoolLimits(max_events=1000, max_bytes=10**7, max_age_s=3600)


def render(text: str = "x") -> object:
    return lambda seq, created: json.dumps({"seq": seq, "text": text, "created": created}).encode()


def append(outbox: Outbox, n: int, source: str = "ns/cam/node", text: str = "x") -> list[int]:
    return [outbox.append(source, "korall/ns/cam/events", render(text)) for _ in range(n)]  # type: ignore[arg-type]


def test_sequence_numbers_count_per_source_and_survive_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ROOMY)
    assert append(box, 3) == [1, 2, 3]
    assert append(box, 2, source="ns/mic/node") == [1, 2]
    box.remove([row.id for row in box.batch(0, 10)])  # all delivered: the table is empty again
    box.close()
    again = Outbox(tmp_path, ROOMY)
    assert append(again, 1) == [4] and append(again, 1, source="ns/mic/node") == [3]
    assert again.last_seq("ns/cam/node") == 4 and again.last_seq("never/seen/here") == 0


def test_the_payload_is_rendered_with_its_own_sequence_number_and_kept_byte_for_byte(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ROOMY)
    append(box, 2, text="hé")
    rows = box.batch(0, 10)
    assert [json.loads(r.payload)["seq"] for r in rows] == [r.seq for r in rows] == [1, 2]
    assert json.loads(rows[0].payload)["text"] == "hé" and rows[0].topic == "korall/ns/cam/events"
    assert json.loads(rows[0].payload)["created"] == rows[0].created


def test_rows_come_oldest_first_and_only_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ROOMY)
    append(box, 5)
    rows = box.batch(0, 3)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert [r.seq for r in box.batch(rows[-1].id, 10)] == [4, 5]
    assert box.remove([rows[0].id, rows[2].id]) == 2
    assert box.remove([rows[0].id]) == 0  # already gone: a duplicate ack changes nothing
    assert [r.seq for r in box.batch(0, 10)] == [2, 4, 5]
    stats = box.stats()
    assert stats.depth == 3 and stats.payload_bytes == sum(len(r.payload) for r in box.batch(0, 10))
    box.close()
    reopened = Outbox(tmp_path, ROOMY).stats()  # the counters are rebuilt from the file
    assert (reopened.depth, reopened.payload_bytes) == (stats.depth, stats.payload_bytes)


def test_ids_never_go_back_after_the_spool_empties(tmp_path: Path) -> None:
    """The publisher continues after the last id it sent; a reused lower id would never be published."""
    box = Outbox(tmp_path, ROOMY)
    append(box, 3)
    last = box.batch(0, 10)[-1].id
    box.remove([r.id for r in box.batch(0, 10)])
    box.close()
    box = Outbox(tmp_path, ROOMY)
    append(box, 1)
    assert box.batch(last, 10)[0].id > last


def test_a_full_spool_evicts_the_oldest_counts_it_and_records_the_range(tmp_path: Path) -> None:
    reports: list[tuple[str, int]] = []
    box = Outbox(
        tmp_path, SpoolLimits(max_events=10, max_bytes=10**7, max_age_s=3600), on_evict=lambda *r: reports.append(r)
    )
    append(box, 25)
    assert [r.seq for r in box.batch(0, 100)] == list(range(16, 26))
    assert reports == [("max_events", 1)] * 15
    total, ranges = box.evictions("ns/cam/node")
    assert total == 15
    assert [(r["first_seq"], r["last_seq"], r["reason"]) for r in ranges] == [(1, 15, "max_events")]  # coalesced


def test_rows_in_flight_are_never_evicted(tmp_path: Path) -> None:
    box = Outbox(tmp_path, SpoolLimits(max_events=10, max_bytes=10**7, max_age_s=3600))
    append(box, 10)
    in_flight = box.batch(0, 4)
    box.protect_upto(in_flight[-1].id)  # handed to the broker, awaiting the ack
    append(box, 3)
    assert [r.seq for r in box.batch(0, 100)] == [1, 2, 3, 4, 8, 9, 10, 11, 12, 13]
    total, ranges = box.evictions("ns/cam/node")
    assert total == 3 and [(r["first_seq"], r["last_seq"]) for r in ranges] == [(5, 7)]
    box.protect_upto(0)  # the session ended: they are ordinary unsent rows again
    append(box, 1)
    assert box.batch(0, 1)[0].seq == 2


def test_the_byte_limit_evicts_as_many_old_rows_as_the_new_one_needs(tmp_path: Path) -> None:
    reports: list[tuple[str, int]] = []
    limits = SpoolLimits(max_events=10_000, max_bytes=64 * 1024, max_age_s=3600)
    box = Outbox(tmp_path, limits, on_evict=lambda *r: reports.append(r))
    append(box, 60, text="a" * 1000)
    sizes = [len(r.payload) for r in box.batch(0, 100)]
    assert reports == [] and box.stats().payload_bytes == sum(sizes)
    box.append("ns/cam/node", "t", render("b" * 10_000))  # type: ignore[arg-type]
    stats = box.stats()
    k = sum(n for _, n in reports)
    assert {reason for reason, _ in reports} == {"max_bytes"} and k > 0
    big = stats.payload_bytes - sum(sizes[k:])
    assert sum(sizes[k:]) + big <= limits.max_bytes < sum(sizes[k - 1 :]) + big  # exactly as many as needed
    assert stats.depth == 61 - k and box.batch(0, 1)[0].seq == k + 1


def test_the_age_limit_evicts_only_what_is_older(tmp_path: Path) -> None:
    box = Outbox(tmp_path, SpoolLimits(max_events=1000, max_bytes=10**7, max_age_s=60))
    append(box, 3)
    newest = box.batch(0, 10)[-1].created
    assert box.evict_expired(now=newest + 30) == 0
    assert box.evict_expired(now=newest + 61) == 3
    assert box.stats().depth == 0
    assert box.evictions("ns/cam/node")[1][0]["reason"] == "max_age"


def test_the_oldest_unsent_age_is_that_of_the_first_row(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ROOMY)
    assert box.stats().oldest_age_s() is None
    append(box, 2)
    first = box.batch(0, 1)[0]
    assert box.stats().oldest_age_s(now=first.created + 5) == pytest.approx(5)


def test_a_spool_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolError, match="cannot open the spool"):
        Outbox(blocker, ROOMY)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(b"this is not an SQLite database, just bytes" * 100)
    with pytest.raises(SpoolError, match="not a database"):
        Outbox(garbage, ROOMY)


def test_a_spool_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    Outbox(tmp_path, ROOMY).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SpoolError, match="spool format 99"):
        Outbox(tmp_path, ROOMY)


def test_the_spool_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ROOMY)
    append(box, 1)
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / f"{DB_NAME}-wal").exists()
