"""Manually assigned Kafka consumer that starts where the training store says.

No consumer group (``group_id=None``, no auto-commit): the dev broker (Tansu) cannot run group
joins, and the design keeps offsets in the learner's own store/checkpoints anyway (DESIGN.md,
"Learner"; kafka-python ``KafkaConsumer.assign``/``seek``).

Offset out of range is handled here, not by ``auto_offset_reset``: a memory-storage broker
that restarted holds fewer messages than we had consumed, and seeking past its end raises no
error, it just returns nothing forever. So every (re)positioning compares the saved offset with
``beginning_offsets``/``end_offsets``; one outside that range starts a new epoch at the
beginning of what the broker now holds, counted and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from learner import metrics
from learner.store.records import PartitionPosition, RawRecord

logger = logging.getLogger(__name__)

ResetFn = Callable[[str, int, int, str], None]


class KafkaSource:
    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        max_poll_records: int = 500,
        check_interval_seconds: float = 5.0,
    ) -> None:
        self.topics = topics
        self.check_interval_seconds = check_interval_seconds
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            request_timeout_ms=30000,
        )
        self.assigned: list[TopicPartition] = []
        self._last_check = 0.0

    def close(self) -> None:
        self.consumer.close()

    def assign_all(self, timeout: float = 30.0) -> list[TopicPartition]:
        """Assign every partition of every topic (waits for metadata)."""
        deadline = time.monotonic() + timeout
        tps: list[TopicPartition] = []
        for topic in self.topics:
            parts = None
            while not parts:
                parts = self.consumer.partitions_for_topic(topic)
                if not parts:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"topic {topic!r} has no partitions (does it exist?)")
                    time.sleep(0.5)
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.assigned = tps
        logger.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps))
        return tps

    def position_from(
        self, saved: dict[tuple[str, int], PartitionPosition], on_reset: ResetFn
    ) -> None:
        """Seek each partition to its saved next offset, or reset if the broker lost it."""
        begin = self.consumer.beginning_offsets(self.assigned)
        end = self.consumer.end_offsets(self.assigned)
        for tp in self.assigned:
            pos = saved.get((tp.topic, tp.partition))
            lo, hi = begin[tp], end[tp]
            if pos is None:
                self.consumer.seek(tp, lo)
                on_reset(tp.topic, tp.partition, lo, "new")
            elif lo <= pos.next_offset <= hi:
                self.consumer.seek(tp, pos.next_offset)
            else:
                self._reset(tp, pos.next_offset, lo, hi, on_reset)
        self._last_check = time.monotonic()

    def check_out_of_range(
        self,
        saved: dict[tuple[str, int], PartitionPosition],
        on_reset: ResetFn,
        force: bool = False,
    ) -> int:
        """Periodic check while running: a broker restart makes our position exceed its end."""
        if not force and time.monotonic() - self._last_check < self.check_interval_seconds:
            return 0
        self._last_check = time.monotonic()
        begin = self.consumer.beginning_offsets(self.assigned)
        end = self.consumer.end_offsets(self.assigned)
        resets = 0
        for tp in self.assigned:
            pos = saved.get((tp.topic, tp.partition))
            nxt = pos.next_offset if pos else begin[tp]
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end[tp] - nxt))
            if not begin[tp] <= nxt <= end[tp]:
                self._reset(tp, nxt, begin[tp], end[tp], on_reset)
                resets += 1
        return resets

    def _reset(self, tp: TopicPartition, saved: int, lo: int, hi: int, on_reset: ResetFn) -> None:
        logger.warning(
            "%s[%d]: saved offset %d outside broker range [%d, %d] (broker restarted or "
            "retention passed it); resuming from %d",
            tp.topic,
            tp.partition,
            saved,
            lo,
            hi,
            lo,
        )
        metrics.OFFSET_RESETS.labels(tp.topic).inc()
        on_reset(tp.topic, tp.partition, lo, "out_of_range")
        self.consumer.seek(tp, lo)

    def poll(self, timeout_ms: int) -> list[RawRecord]:
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        out = [
            RawRecord(tp.topic, tp.partition, m.offset, m.value)
            for tp, msgs in batches.items()
            for m in msgs
        ]
        out.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return out

    def end_offsets(self) -> dict[tuple[str, int], int]:
        end = self.consumer.end_offsets(self.assigned)
        return {(tp.topic, tp.partition): off for tp, off in end.items()}
