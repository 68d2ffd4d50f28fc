"""Events the learner produces itself: ``adapter.published`` on the adapters topic (key = model
name, a compacted topic), and ``user.erased`` from ``learner erase``."""

from __future__ import annotations

import logging

from kafka import KafkaProducer

from schemas.codec import encode_event
from schemas.events import AdapterPublished, EventBase

logger = logging.getLogger(__name__)


def produce_event(bootstrap: str, topic: str, event: EventBase, timeout: float = 30.0) -> None:
    """Produce and wait for the broker's ack (raises on failure; the caller retries)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5)
    try:
        producer.send(topic, key=event.key().encode(), value=encode_event(event)).get(timeout)
        producer.flush(timeout)
    finally:
        producer.close(timeout)


def announce_published(
    bootstrap: str, topic: str, event: AdapterPublished, timeout: float = 30.0
) -> None:
    produce_event(bootstrap, topic, event, timeout)
    logger.info("announced %s on %s", event.version, topic)
