"""Adapter manager following the real adapters topic (Tansu broker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devtools.broker import DevBroker, create_topics
from loop.faults.adapters import write_version
from schemas.codec import encode_event
from schemas.events import AdapterRolledBack, EventBase
from serving.adapters import AdapterManager
from serving.engines.protocol import BASE
from serving.events.logger import EventLogger
from serving.settings import ServingSettings
from tests.serving.adapters.fakes import RecordingEngine
from tests.support.waits import until

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]


def _settings(
    broker: DevBroker, tiny_model_dir: Path, tmp_path: Path, topic: str, name: str = "a"
) -> ServingSettings:
    return ServingSettings(
        model_dir=str(tiny_model_dir),
        model_name="tiny",
        kafka_bootstrap=broker.bootstrap,
        topic_adapters=topic,
        adapter_store=str(tmp_path / "store"),
        adapter_cache_dir=str(tmp_path / f"cache-{name}"),
        spool_dir=str(tmp_path / f"spool-{name}"),
        adapter_unload_grace_seconds=0.0,
        adapter_start_timeout_seconds=30.0,
    )


def _produce(broker: DevBroker, topic: str, events: list[EventBase]) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        for event in events:
            producer.send(topic, key=event.key().encode(), value=encode_event(event))
        producer.flush(10)
    finally:
        producer.close()


@pytest.fixture
def topic(kafka_broker: DevBroker) -> str:
    name = f"adapters-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_broker.bootstrap, [name])
    return name


async def test_new_replica_catches_up_to_latest_promoted(
    kafka_broker: DevBroker, tiny_model_dir: Path, topic: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    v1 = write_version(store, "policy", 1, tiny_model_dir, model_name="tiny")
    v2 = write_version(store, "policy", 2, tiny_model_dir, model_name="tiny")
    v3 = write_version(store, "policy", 3, tiny_model_dir, model_name="tiny")
    other = write_version(store, "policy", 4, tiny_model_dir, model_name="another-model")
    _produce(
        kafka_broker,
        topic,
        [
            v1.published("tiny"),
            v2.published("tiny"),
            AdapterRolledBack(model_name="tiny", from_version="policy@v2", to_version="policy@v1"),
            v3.published("tiny", promote=False),  # published, not to be served
            other.published("another-model"),  # another model's adapter: ignored
        ],
    )
    engine = RecordingEngine()
    manager = AdapterManager(_settings(kafka_broker, tiny_model_dir, tmp_path, topic), engine, None)
    await manager.start()
    try:
        assert manager.ready()
        assert manager.serving_version() == "policy@v1"
        # Only the final target was loaded, not every intermediate version.
        assert [c for c in engine.calls if c[0] == "load"] == [("load", "policy@v1")]
    finally:
        await manager.stop()


async def test_follows_published_adapter_and_admin_changes_propagate(
    kafka_broker: DevBroker, tiny_model_dir: Path, topic: str, tmp_path: Path
) -> None:
    settings_a = _settings(kafka_broker, tiny_model_dir, tmp_path, topic, "a")
    settings_b = _settings(kafka_broker, tiny_model_dir, tmp_path, topic, "b")
    events_a = EventLogger(settings_a)
    await events_a.start()
    engine_a, engine_b = RecordingEngine(), RecordingEngine()
    replica_a = AdapterManager(settings_a, engine_a, events_a)
    replica_b = AdapterManager(settings_b, engine_b, None)
    await replica_a.start()
    await replica_b.start()
    try:
        assert replica_a.ready() and replica_a.serving_version() == BASE

        # The learner publishes v1 (files first, then the event): both replicas swap to it.
        v1 = write_version(tmp_path / "store", "policy", 1, tiny_model_dir, model_name="tiny")
        _produce(kafka_broker, topic, [v1.published("tiny")])
        await until(lambda: replica_a.serving_version() == "policy@v1")
        await until(lambda: replica_b.serving_version() == "policy@v1")

        # A corrupt v2 is refused everywhere; v1 keeps serving.
        v2 = write_version(tmp_path / "store", "policy", 2, tiny_model_dir, model_name="tiny")
        (Path(v2.uri) / "adapter_config.json").write_text("{}")
        _produce(kafka_broker, topic, [v2.published("tiny")])
        await until(lambda: replica_b.refusals.get("file_checksum") == 1)
        await until(lambda: replica_a.refusals.get("file_checksum") == 1)
        assert replica_a.serving_version() == replica_b.serving_version() == "policy@v1"

        # An operator rolls back on replica A (admin API): A emits adapter.rolled_back, B
        # follows it, and A does not re-apply its own event.
        assert await replica_a.rollback() == BASE
        await until(lambda: replica_b.serving_version() == BASE)
        swaps_a = [c for c in engine_a.calls if c[0] == "load"]
        await asyncio.sleep(1.0)
        assert replica_a.serving_version() == BASE
        assert [c for c in engine_a.calls if c[0] == "load"] == swaps_a
        assert events_a.counts()["produced"] == 1
    finally:
        await replica_a.stop()
        await replica_b.stop()
        await events_a.stop()


async def test_starts_during_a_kafka_outage_from_the_store_and_converges(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A replica (re)started while the broker is down serves the learner's latest promoted
    version from the store, degraded, and converges to the topic's decision when it returns."""
    from loop.faults.adapters import write_promoted
    from serving.adapters import metrics as adapter_metrics

    store = tmp_path / "store"
    v1 = write_version(store, "policy", 1, tiny_model_dir, model_name="tiny")
    v2 = write_version(store, "policy", 2, tiny_model_dir, model_name="tiny")
    write_promoted(store, "policy", v2, "tiny")
    broker = DevBroker(log_path=tmp_path / "tansu.log")  # not started: Kafka is down
    topic = f"adapters-{uuid.uuid4().hex[:8]}"
    settings = _settings(broker, tiny_model_dir, tmp_path, topic).model_copy(
        update={"adapter_start_timeout_seconds": 2.0}
    )
    engine = RecordingEngine()
    manager = AdapterManager(settings, engine, None)
    started = time.monotonic()
    await manager.start()
    try:
        assert time.monotonic() - started < 15
        assert manager.ready() and manager.degraded()
        assert manager.serving_version() == "policy@v2"
        assert adapter_metrics.DEGRADED._value.get() == 1
        # The broker comes back; the topic says an operator rolled v2 back to v1.
        broker.start()
        create_topics(broker.bootstrap, [topic])
        rolled_back = AdapterRolledBack(
            model_name="tiny", from_version="policy@v2", to_version="policy@v1"
        )
        _produce(broker, topic, [v1.published("tiny"), v2.published("tiny"), rolled_back])
        await until(lambda: not manager.degraded(), timeout=60)
        assert manager.serving_version() == "policy@v1"
        assert adapter_metrics.DEGRADED._value.get() == 0
    finally:
        await manager.stop()
        broker.stop()


async def test_outage_without_a_store_record_serves_the_base(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    broker = DevBroker(log_path=tmp_path / "tansu.log")  # never started
    settings = _settings(broker, tiny_model_dir, tmp_path, "adapters-none").model_copy(
        update={"adapter_start_timeout_seconds": 1.0}
    )
    manager = AdapterManager(settings, RecordingEngine(), None)
    await manager.start()
    try:
        assert manager.ready() and manager.degraded() and manager.serving_version() == BASE
    finally:
        await manager.stop()


async def test_canary_from_the_topic_then_its_decisions(
    kafka_broker: DevBroker, tiny_model_dir: Path, topic: str, tmp_path: Path
) -> None:
    from schemas.events import AdapterPromoted

    store = tmp_path / "store"
    v = {n: write_version(store, "policy", n, tiny_model_dir, model_name="tiny") for n in (1, 2, 3)}
    _produce(kafka_broker, topic, [v[1].published("tiny"), v[2].published("tiny", canary=True)])
    manager = AdapterManager(
        _settings(kafka_broker, tiny_model_dir, tmp_path, topic), RecordingEngine(), None
    )
    await manager.start()
    try:
        # Caught up: v1 serves, the undecided v2 runs as the canary.
        assert manager.serving_version() == "policy@v1"
        assert manager.canary_version() == "policy@v2"
        # The votes rolled the canary back: serving is unchanged, the canary is gone.
        back = AdapterRolledBack(
            model_name="tiny", from_version="policy@v2", to_version="policy@v1", reason="canary"
        )
        _produce(kafka_broker, topic, [back])
        await until(lambda: manager.canary_version() is None)
        assert manager.serving_version() == "policy@v1"
        # The next canary wins: promoted everywhere.
        _produce(kafka_broker, topic, [v[3].published("tiny", canary=True)])
        await until(lambda: manager.canary_version() == "policy@v3")
        promoted = AdapterPromoted(model_name="tiny", version="policy@v3")
        _produce(kafka_broker, topic, [promoted])
        await until(lambda: manager.serving_version() == "policy@v3")
        assert manager.canary_version() is None
    finally:
        await manager.stop()
