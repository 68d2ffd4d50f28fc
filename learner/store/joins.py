"""The learner-side join of feedback to served content, whole: content in, feedback applied or
held, held feedback released when its content arrives or expired when it never does.

Rules (docs/architecture.md, "Kafka topics and events" and "Last vote wins"):
- Feedback is joined to the content the *learner* logged from ``pair.served`` /
  ``response.served``; text sent with a vote is never trusted (a correction's own text is the
  demonstration, its prompt still comes from the served event).
- The voter must be the user the content was served to, else the event is dropped and counted.
- Feedback that arrives before its content is *held* in the ``held`` table (same transaction as
  the offsets, so it survives restarts) and applied when the content arrives.
- One vote per (pair, user): a later one (by event ts, then offset) replaces an earlier one.
- A row's ``seq`` is the seq of the event that made it usable (the later of the feedback and its
  content), so a snapshot ``seq <= N`` is exactly what had been consumed then.

- A hold expires once the stream's event-time watermark is ``join_window_seconds`` past it
  (event time, not wall time: after downtime the backlog still joins).

All functions take an open cursor inside the ingestion transaction (``learner.store.db`` owns
transactions and offsets); those that judge one event return its drop reason (str) or None.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from learner.store.records import BatchStats, RawRecord
from schemas.codec import decode_event
from schemas.events import (
    EventBase,
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
    ResponseServed,
)

FEEDBACK_KINDS = ("feedback.preference", "feedback.rating", "feedback.correction")

logger = logging.getLogger(__name__)


def add_content(
    cur: sqlite3.Cursor, ev: PairServed | ResponseServed, seq: int, stats: BatchStats
) -> str | None:
    """Store served content, then apply the feedback that was waiting for it."""
    added = add_pair(cur, ev, seq) if isinstance(ev, PairServed) else add_response(cur, ev, seq)
    if added is None:
        _release_held(cur, ev, seq, stats)
    return added


def add_feedback(cur: sqlite3.Cursor, ev: EventBase, rec: RawRecord, seq: int) -> str | None:
    """Apply feedback to its content, or hold it until the content arrives."""
    if content_ready(cur, ev):
        return apply_feedback(cur, ev, rec.offset, seq)
    cur.execute(
        "INSERT INTO held VALUES (?,?,?,?,?,?,?,?,?)",
        (
            ev.event_id,
            ref_id(ev),
            ev.kind,
            ev.model_dump_json(),
            ev.ts.timestamp(),
            rec.topic,
            rec.partition,
            rec.offset,
            seq,
        ),
    )
    return None


def _release_held(
    cur: sqlite3.Cursor, ev: PairServed | ResponseServed, seq: int, stats: BatchStats
) -> None:
    refs = (
        [ev.pair_id, *(r.response_id for r in ev.responses)]
        if isinstance(ev, PairServed)
        else [ev.response.response_id]
    )
    marks = ",".join("?" * len(refs))
    rows = cur.execute(
        f"SELECT event_id, payload, offset FROM held WHERE ref_id IN ({marks}) ORDER BY ts, offset",
        refs,
    ).fetchall()
    for event_id, payload, offset in rows:
        held = decode_event(payload).event
        cur.execute("DELETE FROM held WHERE event_id=?", (event_id,))
        if held is None or not content_ready(cur, held):
            continue
        reason = apply_feedback(cur, held, offset, seq)
        if reason:
            stats.bump(stats.dropped, reason)


def expire_held(cur: sqlite3.Cursor, join_window_seconds: float, stats: BatchStats) -> None:
    """Drop holds the stream has moved ``join_window_seconds`` past (see DESIGN notes in
    learner/store/__init__.py)."""
    watermark = _watermark(cur)
    if watermark is None:
        return
    n = cur.execute("DELETE FROM held WHERE ts < ?", (watermark - join_window_seconds,)).rowcount
    if n:
        stats.bump(stats.dropped, "feedback_expired", n)
        logger.info(
            "%d held feedback event(s) expired (no content within %.0fs)", n, join_window_seconds
        )


def advance_watermark(cur: sqlite3.Cursor, ts: float) -> None:
    """The latest event time seen: the clock holds expire by."""
    current = _watermark(cur)
    if current is None or ts > current:
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", (repr(ts),))


def _watermark(cur: sqlite3.Cursor) -> float | None:
    row = cur.execute("SELECT value FROM meta WHERE key='watermark'").fetchone()
    return float(row[0]) if row else None


def messages_json(event: PairServed | ResponseServed) -> str:
    return json.dumps([m.model_dump() for m in event.messages], sort_keys=True)


def add_pair(cur: sqlite3.Cursor, ev: PairServed, seq: int) -> str | None:
    if cur.execute("SELECT 1 FROM pairs WHERE pair_id=?", (ev.pair_id,)).fetchone():
        return "duplicate_pair"
    msgs = messages_json(ev)
    ids = [r.response_id for r in ev.responses]
    cur.execute(
        "INSERT INTO pairs (pair_id, user_id, messages, response_ids, seq) VALUES (?,?,?,?,?)",
        (ev.pair_id, ev.user_id, msgs, json.dumps(ids), seq),
    )
    for idx, resp in enumerate(ev.responses):
        cur.execute(
            "INSERT OR IGNORE INTO served VALUES (?,?,?,?,?,?,?,?)",
            (
                resp.response_id,
                ev.pair_id,
                idx,
                ev.user_id,
                msgs,
                resp.text,
                resp.adapter_version,
                seq,
            ),
        )
    return None


def add_response(cur: sqlite3.Cursor, ev: ResponseServed, seq: int) -> str | None:
    resp = ev.response
    if cur.execute("SELECT 1 FROM served WHERE response_id=?", (resp.response_id,)).fetchone():
        return "duplicate_response"
    cur.execute(
        "INSERT INTO served VALUES (?,?,?,?,?,?,?,?)",
        (
            resp.response_id,
            None,
            None,
            ev.user_id,
            messages_json(ev),
            resp.text,
            resp.adapter_version,
            seq,
        ),
    )
    return None


def ref_id(ev: EventBase) -> str:
    """The id whose content a feedback event needs before it can be applied."""
    if isinstance(ev, FeedbackPreference):
        return ev.pair_id
    assert isinstance(ev, FeedbackRating | FeedbackCorrection)
    return ev.response_id


def content_ready(cur: sqlite3.Cursor, ev: EventBase) -> bool:
    if isinstance(ev, FeedbackPreference):
        sql = "SELECT 1 FROM pairs WHERE pair_id=?"
    else:
        sql = "SELECT 1 FROM served WHERE response_id=?"
    return cur.execute(sql, (ref_id(ev),)).fetchone() is not None


def apply_feedback(cur: sqlite3.Cursor, ev: EventBase, offset: int, seq: int) -> str | None:
    if isinstance(ev, FeedbackPreference):
        return _apply_preference(cur, ev, offset, seq)
    if isinstance(ev, FeedbackRating):
        return _apply_rating(cur, ev, offset, seq)
    assert isinstance(ev, FeedbackCorrection)
    return _apply_correction(cur, ev, seq)


def _apply_preference(
    cur: sqlite3.Cursor, ev: FeedbackPreference, offset: int, seq: int
) -> str | None:
    user_id, ids_json = cur.execute(
        "SELECT user_id, response_ids FROM pairs WHERE pair_id=?", (ev.pair_id,)
    ).fetchone()
    if user_id != ev.user_id:
        return "user_mismatch"
    ids = json.loads(ids_json)
    if ev.ranking is not None and sorted(ev.ranking) != sorted(ids):
        return "ranking_mismatch"
    ranking = json.dumps(ev.ranking) if ev.ranking is not None else None
    return _upsert_latest(
        cur,
        "votes",
        ("pair_id", ev.pair_id),
        ev,
        offset,
        seq,
        {"choice": ev.choice, "ranking": ranking},
    )


def _apply_rating(cur: sqlite3.Cursor, ev: FeedbackRating, offset: int, seq: int) -> str | None:
    (user_id,) = cur.execute(
        "SELECT user_id FROM served WHERE response_id=?", (ev.response_id,)
    ).fetchone()
    if user_id != ev.user_id:
        return "user_mismatch"
    return _upsert_latest(
        cur, "ratings", ("response_id", ev.response_id), ev, offset, seq, {"rating": ev.rating}
    )


def _apply_correction(cur: sqlite3.Cursor, ev: FeedbackCorrection, seq: int) -> str | None:
    user_id, msgs = cur.execute(
        "SELECT user_id, messages FROM served WHERE response_id=?", (ev.response_id,)
    ).fetchone()
    if user_id != ev.user_id:
        return "user_mismatch"
    cur.execute(
        "INSERT INTO corrections VALUES (?,?,?,?,?,?)",
        (ev.event_id, ev.response_id, ev.user_id, msgs, ev.text, seq),
    )
    return None


def _upsert_latest(
    cur: sqlite3.Cursor,
    table: str,
    key: tuple[str, str],
    ev: FeedbackPreference | FeedbackRating,
    offset: int,
    seq: int,
    values: dict[str, Any],
) -> str | None:
    """Insert or replace the (key, user) row unless the stored one is newer (ts, then offset)."""
    col, key_value = key
    ts = ev.ts.timestamp()
    row = cur.execute(
        f"SELECT ts, offset FROM {table} WHERE {col}=? AND user_id=?", (key_value, ev.user_id)
    ).fetchone()
    if row is not None and (row[0], row[1]) > (ts, offset):
        return "superseded_vote"
    names = [col, "user_id", "event_id", "ts", "offset", *values, "seq"]
    params = [key_value, ev.user_id, ev.event_id, ts, offset, *values.values(), seq]
    cur.execute(
        f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' * len(names))})",
        params,
    )
    # Either way exactly one vote of this (key, user) stopped counting.
    return "superseded_vote" if row is not None else None
