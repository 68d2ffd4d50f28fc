"""The training store: one SQLite file (WAL, synchronous=FULL) on the learner's volume.

Exactly-once ingestion: ``ingest_batch`` writes the decoded events *and* the next offset of
every partition they came from in one transaction, so after any crash the stored offsets name
exactly the first message not yet in the store (SQLite docs, "Atomic Commit In SQLite").
Training cycles read a ``Snapshot`` (``seq`` high-water mark + offsets), which the cycle
checkpoint records, so a resumed cycle trains on exactly the same rows (less any a user's
erasure deleted meanwhile: erasure wins, ``learner.store.erasure``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from learner.store import erasure, joins, queries
from learner.store.records import BatchStats, PartitionPosition, RawRecord, Snapshot
from learner.store.schema import ADDED_COLUMNS, DDL, SCHEMA_VERSION
from schemas.codec import decode_event
from schemas.events import EventBase, PairServed, ResponseServed, UserErased

logger = logging.getLogger(__name__)


class TrainingStore:
    def __init__(self, path: Path | str, join_window_seconds: float = 3600.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.join_window_seconds = join_window_seconds
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so a batch is one transaction.
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(DDL)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a database an older learner created up to ``SCHEMA_VERSION``: one transaction,
        so two processes opening it at once cannot both add a column."""
        with self.transaction() as cur:
            for table, column, definition in ADDED_COLUMNS:
                have = {row[1] for row in cur.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    logger.info("store: added %s.%s", table, column)
            cur.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    # ---- offsets ---------------------------------------------------------------------------

    def positions(self) -> dict[tuple[str, int], PartitionPosition]:
        rows = self.conn.execute(
            "SELECT topic, partition, next_offset, epoch, epoch_start, last_digest FROM offsets"
        ).fetchall()
        return {(r[0], r[1]): PartitionPosition(*r) for r in rows}

    def reset_partition(self, topic: str, partition: int, start: int, reason: str) -> None:
        """Saved offset is outside what the broker holds: start a new epoch at ``start``."""
        with self.transaction() as cur:
            row = cur.execute(
                "SELECT epoch FROM offsets WHERE topic=? AND partition=?", (topic, partition)
            ).fetchone()
            epoch = (row[0] + 1) if row else 0
            cur.execute(
                "INSERT OR REPLACE INTO offsets VALUES (?,?,?,?,?,?)",
                (topic, partition, start, epoch, start, None),
            )
            if reason != "new":
                _bump(cur, "offset_resets", f"{topic}[{partition}]")

    # ---- ingestion -------------------------------------------------------------------------

    def ingest_batch(self, records: Iterable[RawRecord], fault_hook: Any = None) -> BatchStats:
        """Decode, join and store ``records`` and advance their offsets, atomically."""
        stats = BatchStats()
        with self.transaction() as cur:
            positions = self.positions()
            for rec in records:
                pos = positions.get((rec.topic, rec.partition))
                if pos is not None and rec.offset < pos.next_offset:
                    continue  # re-delivered after a seek: already stored
                epoch = pos.epoch if pos else 0
                start = pos.epoch_start if pos else 0
                self._ingest_one(cur, rec, epoch, stats)
                digest = message_digest(rec.value)
                positions[(rec.topic, rec.partition)] = PartitionPosition(
                    rec.topic, rec.partition, rec.offset + 1, epoch, start, digest
                )
                cur.execute(
                    "INSERT OR REPLACE INTO offsets VALUES (?,?,?,?,?,?)",
                    (rec.topic, rec.partition, rec.offset + 1, epoch, start, digest),
                )
            joins.expire_held(cur, self.join_window_seconds, stats)
            for reason, n in stats.decode_errors.items():
                _bump(cur, "decode_errors", reason, n)
            for reason, n in stats.dropped.items():
                _bump(cur, "dropped", reason, n)
            for kind, n in stats.unknown_fields.items():
                _bump(cur, "unknown_fields", kind, n)
            if fault_hook is not None:
                fault_hook("ingest.before_commit")
        return stats

    def _ingest_one(
        self, cur: sqlite3.Cursor, rec: RawRecord, epoch: int, stats: BatchStats
    ) -> None:
        result = decode_event(rec.value)
        if result.unknown_fields:
            kind = result.event.kind if result.event is not None else "?"
            stats.bump(stats.unknown_fields, kind, len(result.unknown_fields))
        if result.event is None:
            assert result.error is not None
            stats.bump(stats.decode_errors, result.error.label)
            logger.warning(
                "skipping %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, result.error
            )
            return
        ev = result.event
        kind = ev.kind
        if cur.execute("SELECT 1 FROM events WHERE event_id=?", (ev.event_id,)).fetchone():
            stats.bump(stats.dropped, "duplicate_event")
            return
        cur.execute(
            "INSERT INTO events (event_id, kind, ts, topic, partition, offset, epoch) "
            "VALUES (?,?,?,?,?,?,?)",
            (ev.event_id, kind, ev.ts.timestamp(), rec.topic, rec.partition, rec.offset, epoch),
        )
        seq = int(cur.lastrowid or 0)
        stats.bump(stats.consumed, (rec.topic, kind))
        joins.advance_watermark(cur, ev.ts.timestamp())
        reason = self._dispatch(cur, ev, rec, seq, stats)
        if reason:
            stats.bump(stats.dropped, reason)

    def _dispatch(
        self, cur: sqlite3.Cursor, ev: EventBase, rec: RawRecord, seq: int, stats: BatchStats
    ) -> str | None:
        if isinstance(ev, UserErased):
            n = erasure.erase_user(cur, ev, seq)
            logger.info("erased user %s: %d stored rows deleted", ev.user_id, n)
            return None
        user_id = getattr(ev, "user_id", None)
        if user_id is not None and erasure.is_erased(cur, user_id):
            return "user_erased"
        if isinstance(ev, PairServed | ResponseServed):
            return joins.add_content(cur, ev, seq, stats)
        if ev.kind not in joins.FEEDBACK_KINDS:
            return "not_training_data"
        return joins.add_feedback(cur, ev, rec, seq)

    # ---- reads -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self.transaction() as cur:
            (max_seq,) = cur.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            positions = tuple(
                sorted(self.positions().values(), key=lambda p: (p.topic, p.partition))
            )
        return Snapshot(int(max_seq), positions)

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name, label, value in self.conn.execute("SELECT name, label, value FROM counters"):
            out.setdefault(name, {})[label] = value
        return out

    def table_sizes(self) -> dict[str, int]:
        tables = ("events", "pairs", "served", "votes", "ratings", "corrections", "held")
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}

    def comparisons(self, max_seq: int | None = None, min_seq: int = 0) -> list[Any]:
        return queries.comparisons(self.conn, min_seq, max_seq)

    def ratings(self, max_seq: int | None = None, min_seq: int = 0) -> list[Any]:
        return queries.ratings(self.conn, min_seq, max_seq)

    def erasures(self, min_seq: int, max_seq: int) -> list[dict[str, Any]]:
        with self.transaction() as cur:
            return erasure.erasures(cur, min_seq, max_seq)

    def count_new_comparisons(self, since_seq: int) -> int:
        """Comparisons usable since ``since_seq`` (same rules as ``comparisons``, in SQL)."""
        return queries.count_comparisons(self.conn, since_seq)

    def sft_examples(self, max_seq: int | None = None, min_seq: int = 0) -> list[Any]:
        return queries.sft_examples(self.conn, min_seq, max_seq)

    def prompts(self, max_seq: int | None = None) -> list[Any]:
        return queries.prompts(self.conn, max_seq)

    def events_between(self, min_seq: int, max_seq: int) -> int:
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM events WHERE seq > ? AND seq <= ?", (min_seq, max_seq)
            ).fetchone()[0]
        )

    # ---- cycle bookkeeping -----------------------------------------------------------------

    def record_cycle_start(self, cycle_id: int, max_seq: int) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO cycles (cycle_id, started, max_seq) VALUES (?,?,?)",
                (cycle_id, time.time(), max_seq),
            )

    def record_cycle_end(
        self,
        cycle_id: int,
        outcome: str,
        reason: str,
        version: str | None,
        metrics: dict[str, float],
    ) -> None:
        with self.transaction() as cur:
            cur.execute(
                "UPDATE cycles SET finished=?, outcome=?, reason=?, version=?, metrics=? "
                "WHERE cycle_id=?",
                (time.time(), outcome, reason, version, json.dumps(metrics), cycle_id),
            )

    def cycles(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT cycle_id, started, finished, outcome, reason, version, max_seq, metrics "
            "FROM cycles ORDER BY cycle_id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("cycle_id", "started", "finished", "outcome", "reason", "version", "max_seq")
        return [dict(zip(keys, r[:7], strict=True)) | {"metrics": json.loads(r[7])} for r in rows]

    def last_cycle_seq(self) -> int:
        """seq high-water mark of the last *finished* cycle (published or rejected)."""
        row = self.conn.execute(
            "SELECT MAX(max_seq) FROM cycles WHERE finished IS NOT NULL"
        ).fetchone()
        return int(row[0] or 0)

    def next_cycle_id(self) -> int:
        row = self.conn.execute("SELECT MAX(cycle_id) FROM cycles").fetchone()
        return int(row[0] or 0) + 1


def message_digest(value: bytes | None) -> str:
    return hashlib.sha256(value if value is not None else b"\x00null").hexdigest()


def _bump(cur: sqlite3.Cursor, name: str, label: str, n: int = 1) -> None:
    cur.execute(
        "INSERT INTO counters VALUES (?,?,?) ON CONFLICT(name, label) "
        "DO UPDATE SET value = value + excluded.value",
        (name, label, n),
    )
