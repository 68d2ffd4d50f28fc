"""Erasure in the training store: a user's rows go, their later events are dropped, others stay."""

from __future__ import annotations

from pathlib import Path

from schemas.events import UserErased
from tests.events import at, correction, pair, pref, rating, single
from tests.learner.factories import Feeder, new_store


def _user_rows(feeder: Feeder, user: str) -> int:
    conn = feeder.store.conn
    total = 0
    for table in ("served", "pairs", "votes", "ratings", "corrections"):
        total += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id=?", (user,)).fetchone()[
            0
        ]
    held = "SELECT COUNT(*) FROM held WHERE json_extract(payload, '$.user_id') = ?"
    return total + conn.execute(held, (user,)).fetchone()[0]


def test_erasure_deletes_the_users_rows_and_drops_their_later_events(tmp_path: Path) -> None:
    feeder = Feeder(new_store(tmp_path))
    for user in ("alice", "bob"):
        feeder.feed(
            pair(f"{user}-p", user=user, t=1),
            pref(f"{user}-p", user=user, t=2),
            single(f"{user}-s", user=user, t=3),
            rating(f"{user}-s", user=user, t=4),
            correction(f"{user}-s", "better", user=user, t=5),
        )
    feeder.feed(pref("alice-late", user="alice", t=6))  # held: its pair has not arrived
    assert _user_rows(feeder, "alice") > 0
    before = len(feeder.store.comparisons())

    feeder.feed(UserErased(user_id="alice", requested_by="admin-api", ts=at(7)))
    assert _user_rows(feeder, "alice") == 0
    assert len(feeder.store.comparisons()) == before - 1
    assert [e.prompt for e in feeder.store.sft_examples()]  # bob's correction is still there
    assert _user_rows(feeder, "bob") > 0

    # Alice's later events (and her pair arriving late) are dropped and counted, not stored.
    stats = feeder.feed(pair("alice-late", user="alice", t=8), pref("alice-p2", user="alice", t=9))
    assert stats.dropped["user_erased"] == 2
    assert _user_rows(feeder, "alice") == 0
    (erasure,) = feeder.store.erasures(0, feeder.store.snapshot().max_seq)
    assert erasure["user_id"] == "alice" and erasure["rows_deleted"] >= 6


def test_erasure_survives_a_restart_of_the_store(tmp_path: Path) -> None:
    feeder = Feeder(new_store(tmp_path))
    feeder.feed(UserErased(user_id="carol", requested_by="learner-cli", ts=at(1)))
    feeder.store.close()
    feeder = Feeder(new_store(tmp_path))
    feeder.next = {k: 1 if k.endswith("feedback") else 0 for k in feeder.next}
    stats = feeder.feed(pair("carol-p", user="carol", t=2))
    assert stats.dropped["user_erased"] == 1
