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

import asyncio
import json
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.broker import DevBroker, free_port
from devtools.tiny_model import write_tiny_model_dir
from learner.publish import AdapterStore
from loop.faults.world import tiny_learner_env
from loop.monitor import admin_adapters, metric_sum, scrape
from loop.preferences import NoiseConfig
from loop.processes import ManagedProcess, entry_point
from loop.sim import SimConfig
from schemas.events import (
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
)
from schemas.topics import DEFAULT_TOPICS
from tests.support.sim_ledger import Ledger, RecordingSimulator, TopicRecord, read_all
from tests.support.store_query import query_store

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CYCLE_COMPARISONS = 12


class Loop:
    """Broker, serving, learner and users of one test, plus what the test reads from them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.model_dir = write_tiny_model_dir(tmp / "tiny-model")
        self.adapters = tmp / "adapters"
        self.learner_data = tmp / "learner"
        self.api_key = "sim-" + secrets.token_hex(8)
        self.admin_token = secrets.token_hex(16)
        self.root = f"http://127.0.0.1:{free_port()}"
        self.broker = DevBroker(
            port=free_port(), data_dir=tmp / "broker-data", log_path=tmp / "broker.log"
        )
        self.serving: ManagedProcess | None = None
        self.learner: ManagedProcess | None = None
        self.learner_starts = 0
        self.ledger = Ledger()
        self.sim: RecordingSimulator | None = None
        self.sim_thread: threading.Thread | None = None

    # -- processes -----------------------------------------------------------------------------
    def start_serving(self) -> None:
        env = {
            "SERVING_MODEL_DIR": str(self.model_dir),
            "SERVING_PORT": self.root.rsplit(":", 1)[1],
            "SERVING_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "SERVING_SPOOL_DIR": str(self.tmp / "serving-spool"),
            "SERVING_ADAPTER_STORE": str(self.adapters),
            "SERVING_ADAPTER_CACHE_DIR": str(self.tmp / "serving-adapter-cache"),
            "SERVING_API_KEYS": json.dumps([self.api_key]),
            "SERVING_ADMIN_TOKEN": self.admin_token,
            "SERVING_HMAC_KEY": secrets.token_hex(16),
            # Notice the outage quickly and probe for the broker's return often.
            "SERVING_KAFKA_DELIVERY_TIMEOUT_SECONDS": "2",
            "SERVING_SPOOL_RETRY_MAX_SECONDS": "1",
        }
        self.serving = ManagedProcess(
            "serving", entry_point("serve", "serving.cli"), env, self.tmp / "serving.log"
        ).start()

    def start_learner(self, min_new_comparisons: int) -> None:
        env = tiny_learner_env(
            self.model_dir,
            self.broker.bootstrap,
            self.learner_data,
            self.adapters,
            min_new_comparisons,
        )
        self.learner_starts += 1
        self.learner = ManagedProcess(
            "learner",
            [*entry_point("learner", "learner.cli"), "run"],
            env,
            self.tmp / f"learner-{self.learner_starts}.log",
        ).start()

    def start_users(self) -> None:
        config = SimConfig(
            base_url=self.root,
            api_key=self.api_key,
            comparisons=0,  # until stopped
            concurrency=2,
            rate=2.0,
            noise=NoiseConfig(0.5),
            max_tokens=16,
            thumbs_rate=0.3,
            correction_rate=0.2,
            seed=11,
        )
        sim = self.sim = RecordingSimulator(config, self.ledger)
        self.sim_thread = threading.Thread(
            target=lambda: asyncio.run(sim.run()), name="sim-users", daemon=True
        )
        self.sim_thread.start()

    def stop_users(self) -> dict[str, Any]:
        assert self.sim is not None and self.sim_thread is not None
        self.sim.request_stop()
        self.sim_thread.join(120)
        assert not self.sim_thread.is_alive(), "simulated users did not finish"
        return self.sim.stats.snapshot()

    def close(self) -> None:
        if self.sim is not None:
            self.sim.request_stop()
        for proc in (self.serving, self.learner):
            if proc is not None and proc.running:
                proc.stop(timeout=30)
        self.broker.stop()

    # -- observations --------------------------------------------------------------------------
    def diagnostics(self) -> str:
        parts = [f"sim: {self.sim.stats.snapshot() if self.sim else None}"]
        for proc in (self.serving, self.learner):
            if proc is not None:
                parts.append(f"--- {proc.name} ({proc.returncode}):\n{proc.log_tail(25)}")
        return "\n".join(parts)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in (self.serving, self.learner):
                if proc is not None and proc.proc is not None and proc.returncode is not None:
                    if proc is self.learner and proc.returncode == -signal.SIGKILL:
                        continue  # killed by the test on purpose
                    raise AssertionError(f"{proc.name} exited while waiting for {what}")
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}\n" + self.diagnostics()
        )

    def serving_metrics(self) -> dict[str, float]:
        return scrape(f"{self.root}/metrics")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.root}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return query_store(self.learner_data / "store.sqlite", sql)

    def store_events(self) -> int:
        rows = self.query("SELECT COUNT(*) FROM events")
        return int(rows[0][0]) if rows else 0

    def checkpoint(self) -> dict[str, Any] | None:
        path = self.learner_data / "checkpoint.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # absent, or read between write and rename of a new one
        return data if isinstance(data, dict) else None

    def adapter_entries(self) -> list[str]:
        family = self.adapters / "policy"
        return sorted(p.name for p in family.iterdir()) if family.is_dir() else []


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    world = Loop(tmp_path)
    try:
        yield world
    finally:
        world.close()


def test_loop_survives_broker_restart_and_learner_sigkill(loop: Loop) -> None:
    started = time.monotonic()
    loop.broker.start()
    loop.start_serving()
    loop.start_learner(CYCLE_COMPARISONS)
    loop.wait_for("serving ready", loop.ready, timeout=180)
    # Users start once the learner consumes, so it is ingesting long before a cycle is due.
    loop.wait_for(
        "the learner's consumer assigned",
        lambda: (
            loop.learner is not None
            and "assigned rlhf." in loop.learner.log_path.read_text(errors="replace")
        ),
        timeout=180,
    )
    loop.start_users()

    # 1) Normal operation: events reach Kafka and the learner's store.
    loop.wait_for("learner ingesting", lambda: loop.store_events() >= 4, timeout=120)
    assert loop.ledger.voted_pairs() < CYCLE_COMPARISONS, "a cycle would start before the outage"

    # 2) The broker stops while users keep calling; it comes back on the same port and storage.
    loop.broker.stop()
    spooled_before = metric_sum(loop.serving_metrics(), "rlhf_serving_events_spooled_total")
    pairs_at_stop = len(loop.ledger.snapshot()[0])
    loop.wait_for(
        "events spooled during the outage",
        lambda: (
            metric_sum(loop.serving_metrics(), "rlhf_serving_events_spooled_total")
            >= spooled_before + 8
        ),
        timeout=60,
    )
    loop.wait_for(
        "pairs served during the outage",
        lambda: len(loop.ledger.snapshot()[0]) >= pairs_at_stop + 4,
        timeout=60,
    )
    loop.broker.start()
    loop.wait_for(
        "spool replayed",
        lambda: (
            (m := loop.serving_metrics())
            and m.get("rlhf_serving_events_spool_depth", -1) == 0
            and metric_sum(m, "rlhf_serving_events_produced_total") > 0
        ),
        timeout=90,
    )
    outage_spooled = metric_sum(loop.serving_metrics(), "rlhf_serving_events_spooled_total")
    assert outage_spooled > spooled_before

    # 3) The first cycle starts on what was ingested (before and after the outage); while its
    #    PPO stage runs (the log shows a finished PPO step of 12), SIGKILL.
    def in_ppo() -> bool:
        ckpt = loop.checkpoint()
        log = loop.learner.log_path.read_text(errors="replace") if loop.learner else ""
        return bool(ckpt and ckpt.get("stage") == "ppo" and "ppo step 1:" in log)

    loop.wait_for("the learner in its PPO stage", in_ppo, timeout=240)
    assert loop.learner is not None and loop.learner.proc is not None
    loop.learner.proc.send_signal(signal.SIGKILL)
    assert loop.learner.proc.wait(30) == -signal.SIGKILL
    at_kill = loop.checkpoint()
    assert at_kill is not None and at_kill["stage"] in ("ppo", "evaluate"), at_kill
    assert at_kill["cycle_id"] == 1 and at_kill.get("outcome") in (None, ""), at_kill
    killed_log = loop.learner.log_path.read_text(errors="replace")
    assert "stage publish" not in killed_log, "killed too late: the cycle was publishing"
    # Nothing half-written is visible: no version, no manifest, no temporary directory.
    assert AdapterStore(str(loop.adapters), "policy").versions() == []
    assert [e for e in loop.adapter_entries() if not e.startswith(".tmp-")] == []
    store_at_kill = loop.store_events()

    # The restarted learner resumes the cycle; it starts no further one (a quiet end state).
    loop.start_learner(min_new_comparisons=1_000_000)
    loop.wait_for(
        "serving to swap in policy@v1",
        lambda: (
            (admin_adapters(loop.root, loop.admin_token) or {}).get("serving_version")
            == "policy@v1"
        ),
        timeout=240,
    )
    resumed_log = loop.learner.log_path.read_text(errors="replace")
    assert "resuming cycle 1 at stage" in resumed_log, resumed_log[-3000:]
    swapped_at = time.monotonic()

    # 4) Later answers carry the new version id.
    loop.wait_for(
        "answers from policy@v1",
        lambda: "policy@v1" in loop.ledger.versions_since(swapped_at),
        timeout=60,
    )
    sim = loop.stop_users()
    assert sim["errors"] == {} and sim["feedback_failed"] == {}, sim
    assert sim["pairs"] > CYCLE_COMPARISONS

    # 5) Every event the users were served and said is in Kafka, exactly.
    loop.wait_for(
        "serving's event queue and spool empty",
        lambda: (
            (m := loop.serving_metrics())
            and m.get("rlhf_serving_events_spool_depth", -1) == 0
            and m.get("rlhf_serving_events_queue_depth", -1) == 0
        ),
        timeout=60,
    )
    metrics = loop.serving_metrics()
    assert metric_sum(metrics, "rlhf_serving_events_dropped_total") == 0
    assert metric_sum(metrics, "rlhf_serving_adapter_refusals_total") == 0
    pairs, feedback = loop.ledger.snapshot()
    expected = len(pairs) + len(feedback)
    records = read_all(
        loop.broker.bootstrap,
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
    loop.wait_for(
        "the learner to ingest every event",
        lambda: loop.store_events() >= len(by_id),
        timeout=120,
    )
    assert loop.learner.stop(timeout=60) == 0, loop.learner.log_tail(30)
    assert loop.serving is not None and loop.serving.stop(timeout=60) in (0, -signal.SIGTERM)
    stored = {r[0] for r in loop.query("SELECT event_id FROM events")}
    assert stored == set(by_id) and loop.store_events() == len(by_id)
    assert store_at_kill <= len(by_id)
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    offsets = {
        (str(t), int(p)): (int(n), int(epoch))
        for t, p, n, epoch in loop.query("SELECT topic, partition, next_offset, epoch FROM offsets")
    }
    assert offsets == {tp: (end, 0) for tp, end in ends.items()}  # epoch 0: never reset
    dup_rows = loop.query(
        "SELECT value FROM counters WHERE name='dropped' AND label='duplicate_event'"
    )
    assert (int(dup_rows[0][0]) if dup_rows else 0) == resent

    # One cycle, published once; its manifest counts its snapshot's events once.
    cycles = loop.query("SELECT cycle_id, outcome, version, max_seq FROM cycles")
    assert [(c, o, v) for c, o, v, _ in cycles] == [(1, "published", "policy@v1")], cycles
    max_seq = int(cycles[0][3])
    store = AdapterStore(str(loop.adapters), "policy")
    assert store.versions() == [1] and store.verify(1) == []
    # v1 and the record of its promotion; no temporary directory left behind.
    assert loop.adapter_entries() == ["promoted.json", "v1"]
    manifest = store.manifest(1)
    in_snapshot = loop.query(
        f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE seq <= {max_seq}"
    )
    assert manifest.event_count == in_snapshot[0][0] == in_snapshot[0][1]
    assert manifest.event_count >= store_at_kill > 0
    for rng in manifest.offsets:
        assert rng.start == 0 and rng.end <= ends[(rng.topic, rng.partition)], rng
    covered = sum(rng.end - rng.start for rng in manifest.offsets)
    assert manifest.event_count <= covered  # re-sent duplicates occupy offsets, not events
    assert time.monotonic() - started < 600
