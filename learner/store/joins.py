"""Applying decoded events to the store: the learner-side join of feedback to served content.

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

All functions take an open cursor inside the ingestion transaction and return a drop reason
(str) or None.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from schemas.events import (
    EventBase,
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
    ResponseServed,
)

FEEDBACK_KINDS = ("feedback.preference", "feedback.rating", "feedback.correction")


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
