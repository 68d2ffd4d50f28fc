"""The closed loop survives faults (broker down, broker restart), in real processes on the tiny
model: a real Kafka-protocol broker (Tansu, on disk through ``DevBroker(data_dir=...)``),
``serve`` and ``learner run`` started by their command lines, and simulated users calling the
public HTTP API the whole time.

1. Users are served and vote; the learner has ingested some of it.
2. The broker stops. Users keep being served (serving spools its events to disk); then the
   broker starts again on the same port with the same storage. Serving re-sends the spool, the
   learner's consumer reconnects and goes on from where it was (no offset reset).
3. The first training cycle starts; while its PPO stage runs, the learner is SIGKILLed. Nothing
   is visible in the adapter store. The learner is started again, resumes the cycle at PPO on
   the same snapshot and publishes ``policy@v1``; serving swaps it in while users keep calling.
4. Later answers carry ``policy@v1``; no user request failed at any point.
5. Kafka holds every event the users were served and said, exactly (distinct events; the spool
   is at-least-once, so a byte-identical re-send is allowed and counted); the learner's store
   holds each of them once, at the offsets the broker has; the published manifest counts the
   cycle's snapshot once; the adapter store holds only complete versions.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from learner.publish import AdapterStore
from loop.faults.ledger import TopicRecord, read_all
from loop.faults.world import World
from loop.monitor import admin_adapters, metric_sum
from schemas.events import (
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
)
from schemas.topics import DEFAULT_TOPICS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CYCLE_COMPARISONS = 12


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # One serving replica straight on the broker (no proxy): the broker itself stops and starts.
    world = World(tmp_path)
    try:
        yield world
    finally:
        world.close()


def test_loop_survives_broker_restart_and_learner_sigkill(world: World) -> None:
    started = time.monotonic()
    world.broker.start()
    world.start_serving()
    world.start_learner(CYCLE_COMPARISONS)
    world.wait_for("serving ready", world.ready, timeout=180)
    # Users start once the learner consumes, so it is ingesting long before a cycle is due.
    world.wait_for(
        "the learner's consumer assigned",
        lambda: (
            world.learner is not None
            and "assigned rlhf." in world.learner.log_path.read_text(errors="replace")
        ),
        timeout=180,
    )
    world.start_users()

    # 1) Normal operation: events reach Kafka and the learner's store.
    world.wait_for("learner ingesting", lambda: world.store_events() >= 4, timeout=120)
    assert world.ledger.voted_pairs() < CYCLE_COMPARISONS, "a cycle would start before the outage"

    # 2) The broker stops while users keep calling; it comes back on the same port and storage.
    world.broker.stop()
    spooled_before = metric_sum(world.serving_metrics(), "rlhf_serving_events_spooled_total")
    pairs_at_stop = len(world.ledger.snapshot()[0])
    world.wait_for(
        "events spooled during the outage",
        lambda: (
            metric_sum(world.serving_metrics(), "rlhf_serving_events_spooled_total")
            >= spooled_before + 8
        ),
        timeout=60,
    )
    world.wait_for(
        "pairs served during the outage",
        lambda: len(world.ledger.snapshot()[0]) >= pairs_at_stop + 4,
        timeout=60,
    )
    world.broker.start()
    world.wait_for(
        "spool replayed",
        lambda: (
            (m := world.serving_metrics())
            and m.get("rlhf_serving_events_spool_depth", -1) == 0
            and metric_sum(m, "rlhf_serving_events_produced_total") > 0
        ),
        timeout=90,
    )
    outage_spooled = metric_sum(world.serving_metrics(), "rlhf_serving_events_spooled_total")
    assert outage_spooled > spooled_before

    # 3) The first cycle starts on what was ingested (before and after the outage); while its
    #    PPO stage runs (the log shows a finished PPO step of 12), SIGKILL.
    def in_ppo() -> bool:
        ckpt = world.checkpoint()
        log = world.learner.log_path.read_text(errors="replace") if world.learner else ""
        return bool(ckpt and ckpt.get("stage") == "ppo" and "ppo step 1:" in log)

    world.wait_for("the learner in its PPO stage", in_ppo, timeout=240)
    assert world.learner is not None and world.learner.proc is not None
    world.learner.proc.send_signal(signal.SIGKILL)
    assert world.learner.proc.wait(30) == -signal.SIGKILL
    at_kill = world.checkpoint()
    assert at_kill is not None and at_kill["stage"] in ("ppo", "evaluate"), at_kill
    assert at_kill["cycle_id"] == 1 and at_kill.get("outcome") in (None, ""), at_kill
    killed_log = world.learner.log_path.read_text(errors="replace")
    assert "stage publish" not in killed_log, "killed too late: the cycle was publishing"
    # Nothing half-written is visible: no version, no manifest, no temporary directory.
    assert AdapterStore(str(world.adapters), "policy").versions() == []
    assert [e for e in world.adapter_entries() if not e.startswith(".tmp-")] == []
    store_at_kill = world.store_events()

    # The restarted learner resumes the cycle; it starts no further one (a quiet end state).
    world.start_learner(min_new_comparisons=1_000_000)
    world.wait_for(
        "serving to swap in policy@v1",
        lambda: (
            (admin_adapters(world.root, world.admin_token) or {}).get("serving_version")
            == "policy@v1"
        ),
        timeout=240,
    )
    resumed_log = world.learner.log_path.read_text(errors="replace")
    assert "resuming cycle 1 at stage" in resumed_log, resumed_log[-3000:]
    swapped_at = time.monotonic()

    # 4) Later answers carry the new version id.
    world.wait_for(
        "answers from policy@v1",
        lambda: "policy@v1" in world.ledger.versions_since(swapped_at),
        timeout=60,
    )
    sim = world.stop_users()
    assert sim["errors"] == {} and sim["feedback_failed"] == {}, sim
    assert sim["pairs"] > CYCLE_COMPARISONS

    # 5) Every event the users were served and said is in Kafka, exactly.
    world.wait_for(
        "serving's event queue and spool empty",
        lambda: (
            (m := world.serving_metrics())
            and m.get("rlhf_serving_events_spool_depth", -1) == 0
            and m.get("rlhf_serving_events_queue_depth", -1) == 0
        ),
        timeout=60,
    )
    metrics = world.serving_metrics()
    assert metric_sum(metrics, "rlhf_serving_events_dropped_total") == 0
    assert metric_sum(metrics, "rlhf_serving_adapter_refusals_total") == 0
    pairs, feedback = world.ledger.snapshot()
    expected = len(pairs) + len(feedback)
    records = read_all(
        world.broker.bootstrap,
        [DEFAULT_TOPICS.interactions, DEFAULT_TOPICS.feedback],
        at_least=expected,
    )
    by_id: dict[str, TopicRecord] = {}
    for record in records:
        event = record.event
        assert event is not None, record
        first = by_id.setdefault(event.event_id, record)
        assert first.value == record.value, "two different events share an event id"
    resent = len(records) - len(by_id)
    events = [r.event for r in by_id.values()]
    served = [e for e in events if isinstance(e, PairServed)]
    assert sorted(x.pair_id for x in served) == sorted(p.pair_id for p in pairs)
    answers = {p.pair_id: set(p.answers) for p in pairs}
    for s in served:
        assert {(r.response_id, r.adapter_version) for r in s.responses} == answers[s.pair_id]
    said: Counter[tuple[str, str]] = Counter()
    for ev in events:
        if isinstance(ev, FeedbackPreference):
            said[(ev.kind, ev.pair_id)] += 1
        elif isinstance(ev, FeedbackRating | FeedbackCorrection):
            said[(ev.kind, ev.response_id)] += 1
        else:
            assert isinstance(ev, PairServed), ev
    assert said == Counter(feedback)
    kinds = Counter(kind for kind, _ in feedback)
    assert kinds["feedback.rating"] > 0 and kinds["feedback.correction"] > 0, kinds

    # The learner's store: each event once, positioned at the end of every partition, no reset.
    world.wait_for(
        "the learner to ingest every event",
        lambda: world.store_events() >= len(by_id),
        timeout=120,
    )
    assert world.learner.stop(timeout=60) == 0, world.learner.log_tail(30)
    assert world.serving is not None and world.serving.stop(timeout=60) in (0, -signal.SIGTERM)
    stored = {r[0] for r in world.query("SELECT event_id FROM events")}
    assert stored == set(by_id) and world.store_events() == len(by_id)
    assert store_at_kill <= len(by_id)
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    offsets = {
        (str(t), int(p)): (int(n), int(epoch))
        for t, p, n, epoch in world.query(
            "SELECT topic, partition, next_offset, epoch FROM offsets"
        )
    }
    assert offsets == {tp: (end, 0) for tp, end in ends.items()}  # epoch 0: never reset
    dup_rows = world.query(
        "SELECT value FROM counters WHERE name='dropped' AND label='duplicate_event'"
    )
    assert (int(dup_rows[0][0]) if dup_rows else 0) == resent

    # One cycle, published once; its manifest counts its snapshot's events once.
    cycles = world.query("SELECT cycle_id, outcome, version, max_seq FROM cycles")
    assert [(c, o, v) for c, o, v, _ in cycles] == [(1, "published", "policy@v1")], cycles
    max_seq = int(cycles[0][3])
    store = AdapterStore(str(world.adapters), "policy")
    assert store.versions() == [1] and store.verify(1) == []
    # v1 and the record of its promotion; no temporary directory left behind.
    assert world.adapter_entries() == ["promoted.json", "v1"]
    manifest = store.manifest(1)
    in_snapshot = world.query(
        f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE seq <= {max_seq}"
    )
    assert manifest.event_count == in_snapshot[0][0] == in_snapshot[0][1]
    assert manifest.event_count >= store_at_kill > 0
    for rng in manifest.offsets:
        assert rng.start == 0 and rng.end <= ends[(rng.topic, rng.partition)], rng
    covered = sum(rng.end - rng.start for rng in manifest.offsets)
    assert manifest.event_count <= covered  # re-sent duplicates occupy offsets, not events
    assert time.monotonic() - started < 600
