"""Follows the adapters topic from the beginning in a background thread.

Tansu (and our design) use manually assigned consumers, no consumer groups: every partition
of the topic is assigned and read from the beginning, so a new replica sees the whole history
of ``adapter.*`` events and can catch up to the latest promoted version (the topic is
compacted by key in production, so the history stays short).

The thread hands decoded events to the asyncio side through ``on_batch(events, caught_up)``,
called from the thread: the first call with ``caught_up=True`` carries everything up to the
end offsets seen at start (the catch-up), later calls carry live events. When the broker lost
its data (Tansu memory storage: a restart empties the topic) our position is past the end; the
follower notices by comparing with ``end_offsets()``, counts it and reads from the beginning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from schemas.codec import decode_event
from schemas.events import EventBase
from serving.adapters import metrics

logger = logging.getLogger(__name__)

OnBatch = Callable[[list[EventBase], bool], None]
_END_CHECK_SECONDS = 5.0


class TopicFollower:
    def __init__(
        self, bootstrap: str, topic: str, on_batch: OnBatch, poll_timeout_ms: int = 500
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.on_batch = on_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.skipped = 0  # undecodable messages
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="adapter-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._connect()
                if consumer is not None:
                    backoff = 0.5
                    self._follow(consumer)
            except Exception as exc:  # broker gone, metadata errors: reconnect and re-read
                logger.warning("adapters topic %s: %s; reconnecting", self.topic, exc)
            finally:
                if consumer is not None:
                    consumer.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _connect(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            logger.warning("adapters topic %s does not exist yet", self.topic)
            consumer.close()
            return None
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def _follow(self, consumer: Any) -> None:
        tps = list(consumer.assignment())
        target = consumer.end_offsets(tps)  # catch-up ends here
        pending: list[EventBase] = []
        caught_up = False
        next_check = time.monotonic() + _END_CHECK_SECONDS
        while not self._stop.is_set():
            records = consumer.poll(timeout_ms=self.poll_timeout_ms)
            events = [e for batch in records.values() for e in self._decode(batch)]
            if not caught_up:
                pending += events
                if all(consumer.position(tp) >= target[tp] for tp in tps):
                    caught_up = True
                    self.on_batch(pending, True)
                    pending = []
            elif events:
                self.on_batch(events, False)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _END_CHECK_SECONDS
                ends = consumer.end_offsets(tps)
                if any(consumer.position(tp) > ends[tp] for tp in tps):
                    metrics.TOPIC_RESETS.inc()
                    logger.warning(
                        "adapters topic %s is shorter than our position (broker "
                        "lost its data); reading it from the beginning",
                        self.topic,
                    )
                    consumer.seek_to_beginning(*tps)

    def _decode(self, messages: list[Any]) -> list[EventBase]:
        out = []
        for message in messages:
            result = decode_event(message.value)
            if result.event is None:
                self.skipped += 1
                logger.warning("adapters topic: skipped a message (%s)", result.error)
                continue
            out.append(result.event)
        return out
