"""Crash safety of ``learner run``: real broker, real SIGKILL.

The learner runs as a subprocess with fast stand-in trainers (``LEARNER_TRAINERS=fake``: the
service, not the ML, is under test). It is killed with SIGKILL first at every named crash
point (``learner.crash_points``: inside the ingestion transaction, after each training stage,
between adapter files and manifest, after the rename, before the Kafka announcement, before
the cycle is marked done), then at random moments, with new traffic between restarts. Afterwards:
every produced event is in the store exactly once, every visible version is complete, and the
published manifests' offset ranges tile each partition exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import DevBroker
from learner import crash_points
from learner.publish import AdapterStore
from loop.faults.store_query import query_store
from schemas.codec import decode_event
from schemas.events import AdapterPublished, EventBase
from schemas.manifest import PROMOTED_FILENAME
from tests.learner.kafka_helpers import produce, voted_pairs
from tests.learner.test_cycle import fake_model_dir
from tests.support.kafka_read import read_topic

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


class Learner:
    def __init__(self, tmp_path: Path, bootstrap: str) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.adapters = tmp_path / "adapters"
        self.once = tmp_path / "faults-fired"
        self.env = os.environ | {
            "LEARNER_KAFKA_BOOTSTRAP": bootstrap,
            "LEARNER_DATA_DIR": str(self.data),
            "LEARNER_ADAPTER_STORE": str(self.adapters),
            "LEARNER_MODEL_DIR": str(fake_model_dir(tmp_path / "model")),
            "LEARNER_TRAINERS": "fake",
            "LEARNER_MIN_NEW_COMPARISONS": "4",
            "LEARNER_CYCLE_PERIOD_SECONDS": "1",
            "LEARNER_METRICS_PORT": "0",
            "LEARNER_POLL_TIMEOUT_MS": "200",
            "LEARNER_IDLE_SLEEP_SECONDS": "0.2",
            "LEARNER_MAX_POLL_RECORDS": "3",  # several ingestion transactions per wave
            "LEARNER_REWARD_CONFIG": json.dumps({"fake_seconds": 0.3}),
            "LEARNER_PPO_CONFIG": json.dumps({"fake_seconds": 0.3}),
            "RLHF_LEARNER_FAULT_ONCE_DIR": str(self.once),
            "PYTHONPATH": str(REPO),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, fault_at: str = "") -> None:
        env = self.env | {"RLHF_LEARNER_FAULT_AT": fault_at}
        log = open(self.tmp / f"learner-{self.starts}.log", "wb")  # noqa: SIM115
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "learner.cli", "run"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(60) is None:
                self.kill()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return query_store(self.data / "store.sqlite", sql)

    def checkpoint(self) -> dict[str, object] | None:
        path = self.data / "checkpoint.json"
        return json.loads(path.read_text()) if path.exists() else None


def test_sigkill_anywhere_loses_nothing_and_duplicates_nothing(
    two_partition_broker: DevBroker, tmp_path: Path
) -> None:
    rng = random.Random(7)
    learner = Learner(tmp_path, two_partition_broker.bootstrap)
    produced: list[EventBase] = []

    def wave() -> None:
        events = voted_pairs(len(produced) // 2, 5, t0=time.time())
        produce(two_partition_broker.bootstrap, events)
        produced.extend(events)

    # 1) Self-inflicted SIGKILL at each fault point, in the order a cycle reaches them.
    for point in crash_points.POINTS:
        wave()
        learner.start(fault_at=point)
        rc = learner.wait(timeout=90)
        assert rc == -signal.SIGKILL, f"learner did not die at {point} (rc={rc})"
        assert (learner.once / point).exists()
    # 2) SIGKILL from outside at random moments.
    for _ in range(5):
        wave()
        learner.start()
        time.sleep(rng.uniform(0.5, 5.0))
        learner.kill()
    # 3) A clean run until everything produced is trained on and published.
    wave()
    learner.start()
    want = {e.event_id for e in produced}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ids = {r[0] for r in learner.query("SELECT event_id FROM events")}
        ckpt = learner.checkpoint()
        covered = learner.query("SELECT MAX(max_seq) FROM cycles WHERE outcome='published'")
        total = learner.query("SELECT MAX(seq) FROM events")
        if (
            ids == want
            and ckpt
            and ckpt["stage"] == "done"
            and covered
            and total
            and covered[0][0] == total[0][0]
        ):
            break
        assert learner.proc is not None and learner.proc.poll() is None, "learner exited"
        time.sleep(0.5)
    learner.stop()

    # Every event exactly once in the store; nothing consumed twice.
    rows = learner.query("SELECT event_id FROM events")
    assert len(rows) == len(want) and {r[0] for r in rows} == want
    dropped = {r[0] for r in learner.query("SELECT label FROM counters WHERE name='dropped'")}
    assert "duplicate_event" not in dropped
    offsets = learner.query("SELECT topic, partition, next_offset FROM offsets")
    assert sum(int(r[2]) for r in offsets) == len(produced)

    # Every visible version complete; no half-written directory left.
    store = AdapterStore(str(learner.adapters), "policy")
    versions = store.versions()
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2
    assert all(store.verify(n) == [] for n in versions)
    # Beside the versions only the record of the latest promotion, naming the newest.
    assert sorted(p.name for p in (learner.adapters / "policy").iterdir()) == sorted(
        [*(f"v{n}" for n in versions), PROMOTED_FILENAME]
    )
    promoted = store.promoted()
    assert promoted is not None and promoted.version == f"policy@v{versions[-1]}"

    # Manifests tile each partition's offsets exactly once, and count every event once.
    manifests = [store.manifest(n) for n in versions]
    ends: dict[tuple[str, int], int] = {}
    for i, m in enumerate(manifests):
        assert m.parent_version == (manifests[i - 1].version if i else None)
        for r in m.offsets:
            assert r.start == ends.get((r.topic, r.partition), 0), (m.version, r)
            ends[(r.topic, r.partition)] = r.end
    assert ends == {(str(t), int(p)): int(n) for t, p, n in offsets}
    assert sum(m.event_count for m in manifests) == len(want)

    # Each published version was announced (re-announcements after a crash are the same event).
    announced = [
        decode_event(v).event
        for _, v in read_topic(two_partition_broker.bootstrap, "rlhf.adapters")
    ]
    pubs = [e for e in announced if isinstance(e, AdapterPublished)]
    assert {e.version for e in pubs} == {m.version for m in manifests}
    for e in pubs:
        number = int(e.version.rsplit("@v", 1)[1])
        import hashlib

        assert hashlib.sha256(store.manifest_bytes(number)).hexdigest() == e.manifest_sha256
    assert len({e.event_id for e in pubs}) == len(versions)


def test_sigterm_aborts_the_running_stage_and_the_restart_finishes_it(
    two_partition_broker: DevBroker, tmp_path: Path
) -> None:
    learner = Learner(tmp_path, two_partition_broker.bootstrap)
    # A reward stage that would take 10 minutes: SIGTERM must not wait for it.
    learner.env["LEARNER_REWARD_CONFIG"] = json.dumps({"fake_seconds": 600})
    events = voted_pairs(0, 6, t0=time.time())
    produce(two_partition_broker.bootstrap, events)
    learner.start()
    deadline = time.monotonic() + 60
    while (ckpt := learner.checkpoint()) is None or ckpt["stage"] != "reward":
        assert time.monotonic() < deadline, "no cycle reached the reward stage"
        time.sleep(0.2)
    time.sleep(0.5)  # inside the stage's sleep
    assert learner.proc is not None
    learner.proc.send_signal(signal.SIGTERM)
    assert learner.wait(timeout=20) == 0, "SIGTERM did not stop the learner promptly and cleanly"
    ckpt = learner.checkpoint()
    assert ckpt is not None and ckpt["stage"] == "reward"  # nothing rejected, nothing skipped
    assert not learner.query("SELECT outcome FROM cycles WHERE outcome IS NOT NULL")

    learner.env["LEARNER_REWARD_CONFIG"] = json.dumps({"fake_seconds": 0.1})
    learner.start()
    deadline = time.monotonic() + 60
    while not AdapterStore(str(learner.adapters), "policy").versions():
        assert time.monotonic() < deadline, "the resumed cycle did not publish"
        assert learner.proc is not None and learner.proc.poll() is None, "learner exited"
        time.sleep(0.2)
    learner.stop()
    manifest = AdapterStore(str(learner.adapters), "policy").manifest(1)
    assert manifest.config["cycle_id"] == ckpt["cycle_id"]  # the same cycle, resumed
    assert manifest.event_count == len(events)
