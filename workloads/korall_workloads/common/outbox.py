"""The durable outbox: events wait here, on disk, until the broker has acknowledged them.

SQLite in WAL mode, one file (`outbox.sqlite3`) in the spool folder. The rules that make delivery lossless:

- `append` gives the event its source's next sequence number, renders the payload and commits, all in one
  transaction, with `synchronous=FULL` (the WAL is fsynced): an event that exists for anyone exists on disk, and
  a sequence number is never handed out twice, across restarts and power cuts alike;
- rows are read oldest first (`batch`) and deleted only once the broker acknowledged them (`remove`). A delete
  that a power cut takes back only means a duplicate later, so deletes commit with `synchronous=NORMAL`;
- the spool is bounded by count, payload bytes and age. Making room evicts the oldest rows not in flight
  (`protect_upto`: those the publisher handed to the broker and awaits an answer for), records each evicted
  sequence range per source (coalesced, kept for the heartbeat) and reports every eviction to `on_evict`,
  so an eviction is counted and logged, never silent.

One connection serves every thread, behind one lock; each operation is a short transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 1
KEPT_EVICTION_RANGES = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never go back, even when the table empties
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    evicted_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS evictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class SpoolError(Exception):
    """The spool cannot be opened or written (permissions, a full disk, a file that is not our database)."""


@dataclass(frozen=True)
class SpoolLimits:
    max_events: int
    max_bytes: int
    max_age_s: float


@dataclass(frozen=True)
class Spooled:
    id: int
    source: str
    seq: int
    topic: str
    payload: bytes
    created: float


@dataclass(frozen=True)
class SpoolStats:
    depth: int
    payload_bytes: int
    oldest_created: float | None
    file_bytes: int

    def oldest_age_s(self, now: float | None = None) -> float | None:
        if self.oldest_created is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.oldest_created)


EvictionHook = Callable[[str, int], None]
"""Called with (reason, count) after each eviction: reason is max_events, max_bytes or max_age."""


class Outbox:
    def __init__(self, folder: Path, limits: SpoolLimits, *, on_evict: EvictionHook | None = None) -> None:
        self.path = folder / DB_NAME
        self.limits = limits
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._protected = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._prepare()
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc

    def _prepare(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"{self.path}: the file system does not support SQLite's WAL mode (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA journal_size_limit=4194304")  # truncate the WAL back to 4 MiB after checkpoints
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise SpoolError(f"{self.path} has spool format {version}; this version reads {SCHEMA_VERSION}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        depth, size = db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(depth), int(size)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------------------

    def append(self, source: str, topic: str, render: Callable[[int, float], bytes]) -> int:
        """Store one event of `source` and return its sequence number; `render(seq, created)` makes the payload.

        Commits (fsynced) before returning. Makes room first if the spool is full: the oldest rows not in flight
        are evicted. Raises SpoolError when the write fails (then nothing was stored and no number was used).
        """
        evicted: list[tuple[str, int]] = []
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "UPDATE sources SET last_seq = last_seq + 1 WHERE key = ? RETURNING last_seq", (source,)
                ).fetchone()
                if row is None:
                    db.execute("INSERT INTO sources (key, last_seq) VALUES (?, 1)", (source,))
                    seq = 1
                else:
                    seq = int(row[0])
                created = time.time()
                payload = render(seq, created)
                evicted, freed_rows, freed_bytes = self._make_room(len(payload), created)
                db.execute(
                    "INSERT INTO outbox (source, seq, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
                    (source, seq, topic, payload, created),
                )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            self._depth += 1 - freed_rows
            self._bytes += len(payload) - freed_bytes
        self._report(evicted)
        return seq

    def _make_room(self, incoming: int, now: float) -> tuple[list[tuple[str, int]], int, int]:
        """Inside append's transaction: evict what the limits require for one more row of `incoming` bytes."""
        reports: list[tuple[str, int]] = []
        rows = bytes_ = 0
        limits = self.limits
        over_count = self._depth + 1 - limits.max_events
        if over_count > 0:
            n, b = self._evict(self._oldest_unprotected(over_count), "max_events", now)
            rows, bytes_ = rows + n, bytes_ + b
            if n:
                reports.append(("max_events", n))
        over_bytes = self._bytes - bytes_ + incoming - limits.max_bytes
        if over_bytes > 0:
            picked: list[tuple[int, str, int, int]] = []
            freed = 0
            for candidate in self._oldest_unprotected(10_000):
                if freed >= over_bytes:
                    break
                picked.append(candidate)
                freed += candidate[3]
            n, b = self._evict(picked, "max_bytes", now)
            rows, bytes_ = rows + n, bytes_ + b
            if n:
                reports.append(("max_bytes", n))
        return reports, rows, bytes_

    def _oldest_unprotected(self, limit: int) -> list[tuple[int, str, int, int]]:
        return self._db.execute(
            "SELECT id, source, seq, length(payload) FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (self._protected, limit),
        ).fetchall()

    def _evict(self, rows: Sequence[tuple[int, str, int, int]], reason: str, now: float) -> tuple[int, int]:
        """Delete `rows` (id, source, seq, bytes) and record their sequence ranges; inside a transaction."""
        if not rows:
            return 0, 0
        db = self._db
        db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        per_source: dict[str, list[int]] = {}
        for _, source, seq, _ in rows:
            per_source.setdefault(source, []).append(seq)
        for source, seqs in per_source.items():
            db.execute("UPDATE sources SET evicted_total = evicted_total + ? WHERE key = ?", (len(seqs), source))
            for first, last in _ranges(sorted(seqs)):
                self._record_range(source, first, last, reason, now)
        db.execute("DELETE FROM evictions WHERE id <= (SELECT max(id) FROM evictions) - ?", (KEPT_EVICTION_RANGES,))
        return len(rows), sum(r[3] for r in rows)

    def _record_range(self, source: str, first: int, last: int, reason: str, now: float) -> None:
        previous = self._db.execute(
            "SELECT id, last_seq, reason FROM evictions WHERE source = ? ORDER BY id DESC LIMIT 1", (source,)
        ).fetchone()
        if previous is not None and previous[1] + 1 == first and previous[2] == reason:
            self._db.execute("UPDATE evictions SET last_seq = ?, at = ? WHERE id = ?", (last, now, previous[0]))
        else:
            self._db.execute(
                "INSERT INTO evictions (source, first_seq, last_seq, reason, at) VALUES (?, ?, ?, ?, ?)",
                (source, first, last, reason, now),
            )

    def evict_expired(self, now: float | None = None) -> int:
        """Evict the unsent rows older than max_age_s (not those in flight); returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                rows = db.execute(
                    "SELECT id, source, seq, length(payload) FROM outbox WHERE id > ? AND created < ? ORDER BY id",
                    (self._protected, now - self.limits.max_age_s),
                ).fetchall()
                n, freed = self._evict(rows, "max_age", now)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot evict from the spool {self.path}: {exc}") from exc
            self._depth -= n
            self._bytes -= freed
        self._report([("max_age", n)] if n else [])
        return n

    def _report(self, evicted: list[tuple[str, int]]) -> None:
        if self._on_evict is not None:
            for reason, count in evicted:
                self._on_evict(reason, count)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # -- delivering ----------------------------------------------------------------------------------------------

    def protect_upto(self, row_id: int) -> None:
        """Rows up to this id are in flight (handed to the broker, awaiting the ack): eviction leaves them be."""
        with self._lock:
            self._protected = row_id

    def batch(self, after_id: int, limit: int) -> list[Spooled]:
        """The oldest `limit` rows after `after_id`, in the order they were appended."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, seq, topic, payload, created FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Spooled(int(r[0]), r[1], int(r[2]), r[3], bytes(r[4]), float(r[5])) for r in rows]

    def remove(self, ids: Sequence[int]) -> int:
        """Delete rows the broker acknowledged; returns how many were still there."""
        if not ids:
            return 0
        with self._lock:
            db = self._db
            try:
                db.execute("PRAGMA synchronous=NORMAL")  # a lost delete is a duplicate later, never a loss
                db.execute("BEGIN IMMEDIATE")
                sizes = []
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    sql = f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING length(payload)"
                    sizes += [int(r[0]) for r in db.execute(sql, tuple(chunk)).fetchall()]
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot delete from the spool {self.path}: {exc}") from exc
            finally:
                db.execute("PRAGMA synchronous=FULL")
            self._depth -= len(sizes)
            self._bytes -= sum(sizes)
        return len(sizes)

    # -- reading the state ---------------------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        with self._lock:
            row = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
            depth, size = self._depth, self._bytes
        files = (self.path, self.path.with_name(DB_NAME + "-wal"), self.path.with_name(DB_NAME + "-shm"))
        on_disk = 0
        for file in files:
            with contextlib.suppress(OSError):  # no WAL yet, or checkpointed away
                on_disk += os.path.getsize(file)
        return SpoolStats(depth, size, None if row is None else float(row[0]), on_disk)

    def last_seq(self, source: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT last_seq FROM sources WHERE key = ?", (source,)).fetchone()
        return 0 if row is None else int(row[0])

    def evictions(self, source: str, limit: int = 20) -> tuple[int, list[dict[str, object]]]:
        """Events of `source` ever evicted, and its newest evicted sequence ranges (oldest first)."""
        with self._lock:
            total = self._db.execute("SELECT evicted_total FROM sources WHERE key = ?", (source,)).fetchone()
            rows = self._db.execute(
                "SELECT first_seq, last_seq, reason, at FROM evictions WHERE source = ? ORDER BY id DESC LIMIT ?",
                (source, limit),
            ).fetchall()
        ranges = [{"first_seq": r[0], "last_seq": r[1], "reason": r[2], "at": round(r[3], 3)} for r in rows[::-1]]
        return (0 if total is None else int(total[0])), ranges


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted numbers as (first, last) runs of consecutive values."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and out[-1][1] + 1 == seq:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out
