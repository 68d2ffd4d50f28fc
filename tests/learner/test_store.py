"""Training store: joins, dedup, last-vote-wins, held feedback, expiry, rankings, bad input."""

from __future__ import annotations

import json
import sqlite3
from itertools import combinations
from pathlib import Path

import pytest

from learner.store import RawRecord, TrainingStore
from learner.store.schema import SCHEMA_VERSION
from schemas.codec import encode_event
from tests.events import correction, pair, pref, rating, single
from tests.learner.factories import FEEDBACK, INTERACTIONS, Feeder, new_store, raw_json


@pytest.fixture
def feeder(tmp_path: Path) -> Feeder:
    return Feeder(new_store(tmp_path, window=100.0))


def test_choice_a_and_b_map_to_canonical_responses(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), pair("p2"), pref("p1", choice="a"), pref("p2", choice="b"))
    by_pair = {c.pair_id: c for c in feeder.store.comparisons()}
    assert (by_pair["p1"].chosen, by_pair["p1"].rejected) == ("answer 0 of p1", "answer 1 of p1")
    assert (by_pair["p2"].chosen, by_pair["p2"].rejected) == ("answer 1 of p2", "answer 0 of p2")
    assert by_pair["p1"].prompt[0].content == "hi"


def test_tie_is_an_equal_target_and_both_bad_two_thumbs_down(feeder: Feeder) -> None:
    feeder.feed(
        pair("p1"),
        pair("p2", user="u2"),
        pref("p1", choice="tie"),
        pref("p2", user="u2", choice="both_bad"),
    )
    (tie,) = feeder.store.comparisons()
    assert (tie.pair_id, tie.target, tie.weight) == ("p1", 0.5, 1.0)
    assert {tie.chosen, tie.rejected} == {"answer 0 of p1", "answer 1 of p1"}
    ratings = feeder.store.ratings()
    assert sorted((r.pair_id, r.response, r.good) for r in ratings) == [
        ("p2", "answer 0 of p2", False),
        ("p2", "answer 1 of p2", False),
    ]
    assert feeder.store.table_sizes()["votes"] == 2


def test_thumbs_join_their_answer_text(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), rating("p1-r0", value="up"), rating("p1-r1", value="down"))
    got = sorted((r.response, r.good, r.prompt[0].content) for r in feeder.store.ratings())
    assert got == [("answer 0 of p1", True, "hi"), ("answer 1 of p1", False, "hi")]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_ranking_expands_to_all_k_choose_2_pairs(feeder: Feeder, k: int) -> None:
    ids = [f"p1-r{i}" for i in range(k)]
    order = list(reversed(ids))
    feeder.feed(pair("p1", k=k), pref("p1", ranking=order))
    comps = feeder.store.comparisons()
    text = {rid: f"answer {rid[-1]} of p1" for rid in ids}
    assert [(c.chosen, c.rejected) for c in comps] == [
        (text[a], text[b]) for a, b in combinations(order, 2)
    ]
    assert len(comps) == k * (k - 1) // 2
    assert all(c.weight == pytest.approx(1 / len(comps)) for c in comps)


def test_ranking_not_covering_the_pair_is_dropped(feeder: Feeder) -> None:
    stats = feeder.feed(
        pair("p1", k=3),
        pref("p1", ranking=["p1-r0", "p1-r1"]),
        pref("p1", user="u1", ranking=["p1-r0", "x", "p1-r1"], t=2),
    )
    assert stats.dropped == {"ranking_mismatch": 2}
    assert feeder.store.comparisons() == []


def test_duplicate_event_id_is_stored_once(feeder: Feeder) -> None:
    vote = pref("p1")
    feeder.feed(pair("p1"), vote)
    stats = feeder.feed(vote)  # redelivered at a new offset (e.g. producer retry)
    assert stats.dropped == {"duplicate_event": 1}
    assert len(feeder.store.comparisons()) == 1
    assert feeder.store.table_sizes()["events"] == 2


def test_last_vote_wins_by_timestamp_even_when_delivered_out_of_order(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), pref("p1", choice="b", t=20), pref("p1", choice="a", t=10))
    (comp,) = feeder.store.comparisons()
    assert comp.chosen == "answer 1 of p1"  # the t=20 vote, though delivered first
    assert feeder.store.counters()["dropped"] == {"superseded_vote": 1}


def test_later_vote_replaces_earlier_and_offset_breaks_ts_ties(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), pref("p1", choice="a", t=5))
    feeder.feed(pref("p1", choice="b", t=5))  # same ts, later offset: wins
    (comp,) = feeder.store.comparisons()
    assert comp.chosen == "answer 1 of p1"
    feeder.feed(pref("p1", choice="tie", t=6))
    assert [c.target for c in feeder.store.comparisons()] == [0.5]


@pytest.mark.parametrize("pair_first", [True, False])
def test_a_vote_changed_back_ends_with_the_last_choice(feeder: Feeder, pair_first: bool) -> None:
    # Three votes, three events (distinct ids): a, b, then a again. Delivered before their pair
    # they are held and applied in (ts, offset) order, to the same end.
    votes = [pref("p1", choice=c, t=t) for c, t in (("a", 1), ("b", 2), ("a", 3))]
    if pair_first:
        feeder.feed(pair("p1"), *votes)
    else:
        feeder.feed(*votes)
        feeder.feed(pair("p1"))
    (comp,) = feeder.store.comparisons()
    assert comp.chosen == "answer 0 of p1"
    assert feeder.store.counters()["dropped"] == {"superseded_vote": 2}


def test_votes_of_different_users_on_a_pair_are_not_merged(tmp_path: Path) -> None:
    # The pair belongs to u1: u2's vote is someone else's and must be dropped.
    feeder = Feeder(new_store(tmp_path))
    stats = feeder.feed(pair("p1", user="u1"), pref("p1", user="u2", choice="a"))
    assert stats.dropped == {"user_mismatch": 1}
    assert feeder.store.comparisons() == []


def test_feedback_before_its_pair_is_held_durably_then_joined(tmp_path: Path) -> None:
    feeder = Feeder(new_store(tmp_path))
    feeder.feed(pref("p1", choice="b", t=1), rating("p1-r0", t=1))
    assert feeder.store.table_sizes()["held"] == 2
    assert feeder.store.comparisons() == []
    before = feeder.store.snapshot()
    # Restart: the hold lives in SQLite, not in memory.
    feeder.store.close()
    feeder.store = new_store(tmp_path)
    feeder.feed(pair("p1", t=0))
    assert feeder.store.table_sizes()["held"] == 0
    (comp,) = feeder.store.comparisons()
    assert comp.chosen == "answer 1 of p1"
    assert feeder.store.table_sizes()["ratings"] == 1
    # The joined vote becomes usable only at the pair's seq: an older snapshot never sees it.
    assert feeder.store.comparisons(max_seq=before.max_seq) == []


def test_held_feedback_expires_after_the_join_window(feeder: Feeder) -> None:
    feeder.feed(pref("p1", t=0))
    feeder.feed(pair("other", t=50))  # within the 100 s window
    assert feeder.store.table_sizes()["held"] == 1
    stats = feeder.feed(pair("other2", t=101))
    assert stats.dropped == {"feedback_expired": 1}
    feeder.feed(pair("p1", t=102))
    assert feeder.store.comparisons() == []
    assert feeder.store.counters()["dropped"]["feedback_expired"] == 1


def test_held_feedback_from_wrong_user_is_dropped_on_join(feeder: Feeder) -> None:
    feeder.feed(pref("p1", user="mallory"))
    stats = feeder.feed(pair("p1", user="u1"))
    assert stats.dropped == {"user_mismatch": 1}
    assert feeder.store.comparisons() == []


def test_corrections_become_sft_examples_with_the_served_prompt(feeder: Feeder) -> None:
    feeder.feed(
        single("s1", prompt="What is 2+2?"),
        correction("s1", "4."),
        pair("p1", prompt="Name a colour"),
        correction("p1-r1", "Blue."),
        correction("s1", "evil", user="u2"),
    )
    examples = feeder.store.sft_examples()
    assert [(e.prompt[0].content, e.completion) for e in examples] == [
        ("What is 2+2?", "4."),
        ("Name a colour", "Blue."),
    ]
    assert feeder.store.counters()["dropped"] == {"user_mismatch": 1}


def test_ratings_are_last_wins_per_response_and_user(feeder: Feeder) -> None:
    feeder.feed(single("s1"), rating("s1", value="up", t=1), rating("s1", value="down", t=2))
    row = feeder.store.conn.execute("SELECT rating FROM ratings").fetchall()
    assert row == [("down",)]


def test_malformed_unknown_and_invalid_events_are_counted_and_skipped(feeder: Feeder) -> None:
    good = pair("p1")
    extra = json.loads(encode_event(pref("p1")))
    extra["new_field"] = 1
    stats = feeder.feed_raw(
        INTERACTIONS,
        b"{not json",
        raw_json(schema_version=99, kind="pair.served"),
        raw_json(schema_version=1, kind="pair.exploded"),
        raw_json(schema_version=1, kind="pair.served", pair_id="x"),
        encode_event(good),
    )
    stats2 = feeder.feed_raw(FEEDBACK, json.dumps(extra).encode(), b"")
    assert stats.decode_errors == {
        "malformed_json": 1,
        "unsupported_version": 1,
        "unknown_kind": 1,
        "invalid": 1,
    }
    assert stats2.unknown_fields == {"feedback.preference": 1}
    assert stats2.decode_errors == {"malformed_json": 1}
    assert len(feeder.store.comparisons()) == 1  # the vote with an unknown field still counts
    positions = feeder.store.positions()
    assert positions[(INTERACTIONS, 0)].next_offset == 5  # bad messages are consumed, not retried
    assert positions[(FEEDBACK, 0)].next_offset == 2
    assert feeder.store.counters()["decode_errors"]["malformed_json"] == 2


def test_events_and_offsets_commit_in_one_transaction(feeder: Feeder) -> None:
    class Crash(Exception):
        pass

    def crash(point: str) -> None:
        raise Crash(point)

    records = [feeder.record(pair("p1")), feeder.record(pref("p1"))]
    with pytest.raises(Crash):
        feeder.store.ingest_batch(records, fault_hook=crash)
    assert feeder.store.positions() == {}
    assert feeder.store.table_sizes()["events"] == 0
    feeder.store.ingest_batch(records)
    assert feeder.store.table_sizes()["events"] == 2
    # A redelivery below the committed offsets is ignored, not stored twice nor counted.
    stats = feeder.store.ingest_batch(records)
    assert stats.consumed == {} and stats.dropped == {}
    assert len(feeder.store.comparisons()) == 1


def test_snapshot_is_exact_and_new_comparisons_count_from_it(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), pref("p1"))
    snap = feeder.store.snapshot()
    feeder.feed(
        pair("p2"), pref("p2"), pair("p3", k=3), pref("p3", ranking=["p3-r2", "p3-r0", "p3-r1"])
    )
    assert len(feeder.store.comparisons(max_seq=snap.max_seq)) == 1
    assert feeder.store.count_new_comparisons(snap.max_seq) == 4
    assert {p.topic: p.next_offset for p in snap.positions} == {INTERACTIONS: 1, FEEDBACK: 1}


def test_prompts_are_distinct_logged_prompts(feeder: Feeder) -> None:
    feeder.feed(
        pair("p1", prompt="a"),
        pair("p2", prompt="b"),
        pair("p3", prompt="a"),
        single("s1", prompt="c"),
    )
    assert [p[0].content for p in feeder.store.prompts()] == ["a", "b", "c"]


def test_offset_reset_starts_a_new_epoch_and_is_counted(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), pair("p2"))
    feeder.store.reset_partition(INTERACTIONS, 0, 0, "out_of_range")
    pos = feeder.store.positions()[(INTERACTIONS, 0)]
    assert (pos.next_offset, pos.epoch, pos.epoch_start) == (0, 1, 0)
    assert feeder.store.counters()["offset_resets"] == {f"{INTERACTIONS}[0]": 1}
    # After the reset, offset 0 is a new message of the new epoch, not a redelivery.
    feeder.store.ingest_batch([RawRecord(INTERACTIONS, 0, 0, encode_event(pair("p9")))])
    assert feeder.store.table_sizes()["pairs"] == 3


def test_sql_count_of_new_comparisons_matches_the_expansion(feeder: Feeder) -> None:
    feeder.feed(pair("p1"), pref("p1"), pair("p2", k=4), pair("p3"))
    since = feeder.store.snapshot().max_seq
    feeder.feed(
        pref("p2", ranking=["p2-r3", "p2-r1", "p2-r0", "p2-r2"]),
        pref("p3", choice="tie"),
        pair("p4"),
        pref("p4", choice="b"),
    )
    for start in (0, since):
        assert feeder.store.count_new_comparisons(start) == len(
            feeder.store.comparisons(min_seq=start)
        )
    assert feeder.store.count_new_comparisons(since) == 8  # 6 + the tie + p4


def test_a_database_from_before_guarded_canaries_opens_and_gains_the_column(
    tmp_path: Path,
) -> None:
    """A store an older learner wrote (schema 1: no ``canaries.guarded``) opens, its canary rows
    read as ordinary canaries, and new rows can be guarded."""
    path = tmp_path / "store.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE canaries (
            version TEXT PRIMARY KEY, baseline TEXT NOT NULL, started REAL NOT NULL,
            decided REAL, outcome TEXT, evidence TEXT);
        INSERT INTO canaries (version, baseline, started) VALUES ('policy@v1', 'base', 1.0);
        """
    )
    old.commit()
    old.close()
    store = TrainingStore(path)
    rows = store.conn.execute("SELECT version, guarded FROM canaries").fetchall()
    assert rows == [("policy@v1", 0)]
    with store.transaction() as cur:
        cur.execute("INSERT INTO canaries VALUES ('policy@v2', 'base', 2.0, NULL, NULL, NULL, 1)")
    meta = store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert meta == (str(SCHEMA_VERSION),)
    store.close()
    again = TrainingStore(path)  # a second open finds the column and adds nothing
    assert again.conn.execute("SELECT COUNT(*) FROM canaries WHERE guarded=1").fetchone() == (1,)
