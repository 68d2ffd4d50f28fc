"""Read a whole topic from a real broker with a manually assigned consumer (Tansu: no groups)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition


def read_topic(
    bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30.0
) -> list[tuple[bytes | None, bytes]]:
    """All (key, value) pairs on ``topic`` partition order; wait until ``expect`` arrived."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            for tp in partitions:
                out.extend((m.key, m.value) for m in batches.get(tp, []))
            if expect is None and not batches:
                break
            if expect is not None and len(out) >= expect:
                break
        return out
    finally:
        consumer.close()
