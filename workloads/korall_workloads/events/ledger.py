"""What a consumer has received, per source: de-duplication by (source, sequence) and the gaps that remain.

Pure bookkeeping, no MQTT: `Ledger.event(payload)` says whether an event is new, a duplicate (delivery is at
least once: an outage or a restart can repeat the last few), or late (it fills an earlier gap), and which gap a
new event opened. `Ledger.heartbeat(payload)` keeps the source's last heartbeat, which tells a gap the source
evicted on purpose (its spool limit, counted and reported) from one that is simply missing, and how many events
the source still holds. Received sequence numbers are kept as merged ranges, so memory stays small.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["new", "duplicate", "late"]


@dataclass(frozen=True)
class Observation:
    source: str
    seq: int
    verdict: Verdict
    gap: tuple[int, int] | None = None  # the range this event showed to be missing (so far)


@dataclass
class SourceLedger:
    start: int | None  # first sequence number expected; None: the first one received
    ranges: list[list[int]] = field(default_factory=list)  # received, sorted, merged: [[first, last], ...]
    received: int = 0
    duplicates: int = 0
    late: int = 0
    heartbeat: dict[str, Any] | None = None

    def add(self, seq: int) -> tuple[Verdict, tuple[int, int] | None]:
        if self.start is None:
            self.start = seq
        starts = [r[0] for r in self.ranges]
        i = bisect.bisect_right(starts, seq) - 1
        if i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]:
            self.duplicates += 1
            return "duplicate", None
        if seq < self.start:  # before what we expect: older than the tail's start, not a gap
            self.start = seq
        highest = self.ranges[-1][1] if self.ranges else self.start - 1
        gap = (highest + 1, seq - 1) if seq > highest + 1 else None
        verdict: Verdict = "late" if seq < highest else "new"
        self.received += 1
        if verdict == "late":
            self.late += 1
        self._insert(i, seq)
        return verdict, gap

    def _insert(self, i: int, seq: int) -> None:
        joins_left = i >= 0 and self.ranges[i][1] + 1 == seq
        joins_right = i + 1 < len(self.ranges) and self.ranges[i + 1][0] - 1 == seq
        if joins_left and joins_right:
            self.ranges[i][1] = self.ranges[i + 1][1]
            del self.ranges[i + 1]
        elif joins_left:
            self.ranges[i][1] = seq
        elif joins_right:
            self.ranges[i + 1][0] = seq
        else:
            self.ranges.insert(i + 1, [seq, seq])

    def missing(self) -> list[tuple[int, int]]:
        """Holes from the start to the highest received number."""
        holes = []
        expected = self.start
        for first, last in self.ranges:
            if expected is not None and first > expected:
                holes.append((expected, first - 1))
            expected = last + 1
        return holes

    def summary(self) -> dict[str, Any]:
        holes = self.missing()
        evicted_ranges = [(r["first_seq"], r["last_seq"]) for r in (self.heartbeat or {}).get("evicted_ranges", [])]
        evicted = sum(_overlap(hole, r) for hole in holes for r in evicted_ranges)
        missing = sum(last - first + 1 for first, last in holes)
        highest = self.ranges[-1][1] if self.ranges else None
        source_last = (self.heartbeat or {}).get("last_seq")
        pending = max(0, source_last - highest) if source_last is not None and highest is not None else None
        return {
            "first": self.start,
            "last": highest,
            "received": self.received,
            "duplicates": self.duplicates,
            "late": self.late,
            "missing": missing,
            "missing_evicted_by_source": evicted,
            "missing_ranges": [list(h) for h in holes],
            "source_last_seq": source_last,
            "not_yet_received": pending,
            "source_spool_depth": (self.heartbeat or {}).get("spool_depth"),
        }


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)


def source_key(payload: dict[str, Any]) -> str:
    source = payload["source"]
    return f"{source['namespace']}/{source['name']}/{source['node']}"


class Ledger:
    def __init__(self, from_seq: int | None = None) -> None:
        self.from_seq = from_seq
        self.sources: dict[str, SourceLedger] = {}

    def _source(self, key: str) -> SourceLedger:
        if key not in self.sources:
            self.sources[key] = SourceLedger(self.from_seq)
        return self.sources[key]

    def event(self, payload: dict[str, Any]) -> Observation:
        key = source_key(payload)
        seq = int(payload["seq"])
        verdict, gap = self._source(key).add(seq)
        return Observation(key, seq, verdict, gap)

    def heartbeat(self, payload: dict[str, Any]) -> None:
        self._source(source_key(payload)).heartbeat = payload

    def summary(self) -> dict[str, dict[str, Any]]:
        return {key: ledger.summary() for key, ledger in sorted(self.sources.items()) if ledger.start is not None}

    @property
    def complete(self) -> bool:
        """True when no source has a hole between its first and its highest received sequence number."""
        return all(not ledger.missing() for ledger in self.sources.values())
