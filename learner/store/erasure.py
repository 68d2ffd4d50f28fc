"""Erasure: forget one user (by pseudonymous id) in the training store, for good.

A ``user.erased`` event deletes everything the store holds that came from the user: the
answers served to them (and so the pairs and prompts they wrote), their votes, thumbs and
corrections, and feedback of theirs still held waiting for its content. The user id stays in
``erased_users`` so that their later events, and earlier ones read again from the topics after
an offset reset, are dropped (counted as ``user_erased``) instead of stored. The events table
keeps only ids, kinds, times and offsets (no content), so exactly-once ingestion still holds.

What erasure cannot reach: adapters and reward models already trained on the user's data (their
weights carry a diffuse influence that cannot be removed without retraining from scratch); the
manifest of each later version records the erasures honoured before its snapshot.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from schemas.events import UserErased

# Tables with a user_id column, deleted by it.
_USER_TABLES = ("served", "pairs", "votes", "ratings", "corrections")


def is_erased(cur: sqlite3.Cursor, user_id: str) -> bool:
    row = cur.execute("SELECT 1 FROM erased_users WHERE user_id=?", (user_id,)).fetchone()
    return row is not None


def erase_user(cur: sqlite3.Cursor, ev: UserErased, seq: int) -> int:
    """Delete the user's rows; returns how many were deleted."""
    deleted = 0
    for table in _USER_TABLES:
        deleted += cur.execute(f"DELETE FROM {table} WHERE user_id=?", (ev.user_id,)).rowcount
    deleted += cur.execute(
        "DELETE FROM held WHERE json_extract(payload, '$.user_id') = ?", (ev.user_id,)
    ).rowcount
    cur.execute(
        "INSERT INTO erased_users (user_id, event_id, ts, seq, rows_deleted) VALUES (?,?,?,?,?) "
        "ON CONFLICT(user_id) DO UPDATE SET rows_deleted = rows_deleted + excluded.rows_deleted",
        (ev.user_id, ev.event_id, ev.ts.timestamp(), seq, deleted),
    )
    return deleted


def erasures(cur: sqlite3.Cursor, min_seq: int, max_seq: int) -> list[dict[str, Any]]:
    """Erasures recorded with ``min_seq < seq <= max_seq``, oldest first."""
    rows = cur.execute(
        "SELECT event_id, user_id, ts, rows_deleted FROM erased_users "
        "WHERE seq > ? AND seq <= ? ORDER BY seq",
        (min_seq, max_seq),
    ).fetchall()
    return [
        {"event_id": e, "user_id": u, "erased_at": ts, "rows_deleted": n} for e, u, ts, n in rows
    ]
