"""Ingestion loop step: poll -> store (events + offsets in one transaction) -> metrics.

The store is the consumer's checkpoint: on start the source is positioned from the offsets the
store committed together with the events, so a crash anywhere re-reads exactly the messages
whose transaction did not commit (no loss, no duplicate).
"""

from __future__ import annotations

import logging
import time

from kafka.errors import KafkaError

from learner import crash_points, metrics
from learner.ingest.consumer import KafkaSource
from learner.store import TrainingStore
from learner.store.records import BatchStats

logger = logging.getLogger(__name__)


# A consumer behind the broker whose polls keep coming back empty this long is reported:
# the broker answers its fetches too slowly or not at all, and the learner would otherwise
# look merely idle (found by the 64-client soak, docs/faults.md).
STALL_WARNING_SECONDS = 60.0


class Ingestor:
    def __init__(self, store: TrainingStore, source: KafkaSource) -> None:
        self.store = store
        self.source = source
        self._empty_behind_since: float | None = None
        self._last_stall_warning = 0.0

    def start(self) -> None:
        self.source.assign_all()
        self.source.position_from(self.store.positions(), self.store.reset_partition)
        self.update_gauges()

    def step(self, timeout_ms: int = 500) -> int:
        """One poll; returns how many messages were read (0 when idle or the broker is away)."""
        try:
            records = self.source.poll(timeout_ms)
            if not records:
                self.source.check_out_of_range(self.store.positions(), self.store.reset_partition)
                self._note_empty_poll()
                return 0
        except KafkaError as exc:  # broker away: keep the process, try again next step
            logger.warning("kafka poll failed: %s", exc)
            time.sleep(1.0)
            return 0
        stats = self.store.ingest_batch(records, fault_hook=crash_points.crash_point)
        _publish_stats(stats)
        self._empty_behind_since = None
        metrics.CONSUMER_STALLED.set(0)
        return len(records)

    def _note_empty_poll(self) -> None:
        """Track empty polls while the broker says there is more to read; warn once a minute."""
        now = time.monotonic()
        if self.source.lag <= 0:
            self._empty_behind_since = None
            metrics.CONSUMER_STALLED.set(0)
            return
        if self._empty_behind_since is None:
            self._empty_behind_since = now
        stalled = now - self._empty_behind_since
        metrics.CONSUMER_STALLED.set(stalled)
        if stalled >= STALL_WARNING_SECONDS and now - self._last_stall_warning >= 60.0:
            self._last_stall_warning = now
            logger.warning(
                "consumer stalled: %d message(s) behind the broker's end, but its fetches have "
                "returned nothing for %.0f s (broker slow or failing to serve fetches?)",
                self.source.lag,
                stalled,
            )

    def drain(self, idle_polls: int = 2, timeout_ms: int = 500, max_seconds: float = 60.0) -> int:
        """Read until ``idle_polls`` consecutive empty polls (or ``max_seconds``)."""
        total, idle, deadline = 0, 0, time.monotonic() + max_seconds
        while idle < idle_polls and time.monotonic() < deadline:
            n = self.step(timeout_ms)
            total += n
            idle = idle + 1 if n == 0 else 0
        self.update_gauges()
        return total

    def update_gauges(self) -> None:
        for table, n in self.store.table_sizes().items():
            metrics.STORE_ROWS.labels(table).set(n)
        metrics.FEEDBACK_HELD.set(self.store.table_sizes()["held"])
        if self.store.path.exists():
            metrics.STORE_SIZE.set(self.store.path.stat().st_size)
        try:
            self.source.check_out_of_range(
                self.store.positions(), self.store.reset_partition, force=True
            )
        except KafkaError as exc:
            logger.warning("could not read end offsets: %s", exc)


def _publish_stats(stats: BatchStats) -> None:
    for (topic, kind), n in stats.consumed.items():
        metrics.EVENTS_CONSUMED.labels(topic, kind).inc(n)
    for reason, n in stats.decode_errors.items():
        metrics.DECODE_ERRORS.labels(reason).inc(n)
    for kind, n in stats.unknown_fields.items():
        metrics.UNKNOWN_FIELDS.labels(kind).inc(n)
    for reason, n in stats.dropped.items():
        metrics.EVENTS_DROPPED.labels(reason).inc(n)
