"""Producing learner input to a real broker, for the kafka and e2e tiers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer

from schemas.codec import encode_event
from schemas.events import EventBase
from schemas.topics import DEFAULT_TOPICS, Topics
from tests.events import pair, pref


def fresh_topics() -> Topics:
    """Topic names no other test uses, so a test's broker holds only its own events."""
    suffix = uuid.uuid4().hex[:6]
    return Topics(interactions=f"i-{suffix}", feedback=f"f-{suffix}", adapters=f"a-{suffix}")


def topic_settings(topics: Topics) -> dict[str, Any]:
    """The ``topic_*`` settings (serving's and the learner's alike) that name ``topics``."""
    return {f"topic_{kind}": name for kind, name in topics.model_dump().items()}


def produce(
    bootstrap: str,
    events: Sequence[EventBase | tuple[str, bytes]],
    partition_of: dict[str, int] | None = None,
) -> None:
    """Send events (or raw (topic, bytes)) and wait for every ack."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = []
        for item in events:
            if isinstance(item, tuple):
                topic, raw = item
                futures.append(producer.send(topic, value=raw))
                continue
            topic = DEFAULT_TOPICS.for_kind(item.kind)
            futures.append(producer.send(topic, key=item.key().encode(), value=encode_event(item)))
        for fut in futures:
            fut.get(timeout=30)
    finally:
        producer.close()


def voted_pairs(start: int, n: int, t0: float = 0.0) -> list[EventBase]:
    """``n`` pairs, each followed by its user's vote ("a" or "b" alternating)."""
    out: list[EventBase] = []
    for i in range(start, start + n):
        out.append(pair(f"p{i}", prompt=f"prompt {i}", t=t0 + i))
        out.append(pref(f"p{i}", choice="ab"[i % 2], t=t0 + i + 0.5))
    return out
