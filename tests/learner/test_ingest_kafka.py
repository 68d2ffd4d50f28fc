"""Ingestion from the real broker (Tansu): manual assignment of every partition, resume from
the store's offsets after a restart, and a broker restart's offset-out-of-range."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from devtools.broker import DevBroker
from learner import metrics
from learner.ingest import Ingestor, KafkaSource
from learner.store import TrainingStore
from tests.learner.factories import new_store
from tests.learner.kafka_helpers import produce, voted_pairs

pytestmark = pytest.mark.kafka
TOPICS = ["rlhf.interactions", "rlhf.feedback"]


def ingestor_for(broker: DevBroker, store: TrainingStore) -> Ingestor:
    ingestor = Ingestor(store, KafkaSource(broker.bootstrap, TOPICS, max_poll_records=7))
    ingestor.start()
    return ingestor


def ingested_votes(broker: DevBroker, tmp_path: Path, pairs: int) -> tuple[TrainingStore, Ingestor]:
    """``pairs`` voted pairs on the topics, all of them read into a new store."""
    produce(broker.bootstrap, voted_pairs(0, pairs))
    store = new_store(tmp_path)
    ingestor = ingestor_for(broker, store)
    ingestor.drain()
    return store, ingestor


def event_ids(store: TrainingStore) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT event_id FROM events")]


def test_ingests_every_partition_and_resumes_after_restart(
    two_partition_broker: DevBroker, tmp_path: Path
) -> None:
    first = voted_pairs(0, 10)
    produce(two_partition_broker.bootstrap, [*first, ("rlhf.feedback", b"not json")])
    store = new_store(tmp_path)
    ingestor = ingestor_for(two_partition_broker, store)
    assert {(tp.topic, tp.partition) for tp in ingestor.source.assigned} == {
        (t, p) for t in TOPICS for p in (0, 1)
    }
    for topic in TOPICS:
        for partition in ("0", "1"):
            metrics.CONSUMER_LAG.labels(topic, partition).set(-1)
    metrics.STORE_SIZE.set(-1)
    ingestor.drain()
    assert sorted(event_ids(store)) == sorted(e.event_id for e in first)
    # The gauges moved: nothing left to read on any partition, the store's file size.
    for topic in TOPICS:
        for partition in ("0", "1"):
            labels = {"topic": topic, "partition": partition}
            assert REGISTRY.get_sample_value("rlhf_learner_consumer_lag_messages", labels) == 0
    size = REGISTRY.get_sample_value("rlhf_learner_store_size_bytes")
    assert size == store.path.stat().st_size > 0
    assert len(store.comparisons()) == 10
    assert store.counters()["decode_errors"] == {"malformed_json": 1}
    ingestor.source.close()
    store.close()

    # "Restart": new store object, new consumer; only what came after is read.
    second = voted_pairs(10, 5)
    produce(two_partition_broker.bootstrap, second)
    store = new_store(tmp_path)
    ingestor = ingestor_for(two_partition_broker, store)
    ingestor.drain()
    ids = event_ids(store)
    assert len(ids) == len(set(ids)) == 30
    assert set(ids) == {e.event_id for e in first + second}
    assert "dropped" not in store.counters()  # no duplicate deliveries at all
    # 30 events + 1 malformed message, each consumed exactly once across the partitions.
    assert sum(p.next_offset for p in store.positions().values()) == 31
    ingestor.source.close()


def test_broker_restart_resets_out_of_range_offsets_and_counts_it(
    two_partition_broker: DevBroker, tmp_path: Path
) -> None:
    store, ingestor = ingested_votes(two_partition_broker, tmp_path, 12)
    ingestor.source.close()
    assert len(store.comparisons()) == 12

    two_partition_broker.restart()  # memory storage: every topic is empty again
    later = voted_pairs(100, 2)
    produce(two_partition_broker.bootstrap, later)
    ingestor = ingestor_for(two_partition_broker, store)
    ingestor.drain()
    resets = store.counters()["offset_resets"]
    assert sum(resets.values()) >= 2  # at least the partitions that had held more
    assert {e.event_id for e in later} <= set(event_ids(store))
    assert len(store.comparisons()) == 14
    epochs = {k: p.epoch for k, p in store.positions().items()}
    assert max(epochs.values()) == 1
    ingestor.source.close()


def test_broker_restart_while_running_is_detected(
    two_partition_broker: DevBroker, tmp_path: Path
) -> None:
    store, ingestor = ingested_votes(two_partition_broker, tmp_path, 12)
    two_partition_broker.restart()
    # Nothing produced yet: the saved offsets now exceed the (empty) broker's end.
    ingestor.update_gauges()
    assert sum(store.counters()["offset_resets"].values()) >= 2
    later = voted_pairs(200, 3)
    produce(two_partition_broker.bootstrap, later)
    ingestor.drain(idle_polls=4)
    assert {e.event_id for e in later} <= set(event_ids(store))
    # An emptied Tansu may re-create the topics with another partition count when a client
    # touches them first; whatever it holds now, every partition is assigned and tracked.
    now = {(tp.topic, tp.partition) for tp in ingestor.source.current_partitions()}
    assert now <= set(store.positions()) and now == {
        (tp.topic, tp.partition) for tp in ingestor.source.assigned
    }
    ingestor.source.close()


def test_status_reads_offsets_and_lag_from_a_live_broker(
    two_partition_broker: DevBroker, tmp_path: Path
) -> None:
    from learner.settings import LearnerSettings
    from learner.status import collect_status

    produce(two_partition_broker.bootstrap, voted_pairs(0, 4))
    store = TrainingStore(tmp_path / "data" / "store.sqlite")
    ingestor = ingestor_for(two_partition_broker, store)
    ingestor.drain()
    ingestor.source.close()
    settings = LearnerSettings(
        data_dir=str(tmp_path / "data"),
        kafka_bootstrap=two_partition_broker.bootstrap,
        adapter_store=str(tmp_path / "adapters"),
    )
    info = collect_status(settings)
    assert isinstance(info["end_offsets"], dict), info["end_offsets"]
    assert set(info["lag"]) == set(info["offsets"]) and all(v >= 0 for v in info["lag"].values())
    assert sum(p["next_offset"] for p in info["offsets"].values()) == 8
