"""Event logger: non-blocking emit, background Kafka delivery, disk spool when Kafka is down.

Event logging never blocks or fails a chat request: if Kafka is unreachable, events go to a local
disk spool and are re-sent in order when it is back; every event is counted produced / spooled /
dropped, and dropped must stay 0 (docs/architecture.md, "Invariants").

How (one delivery thread owns the Kafka producer and the spool, so ordering needs no locks):

1. ``emit`` encodes the event and puts it on an unbounded in-memory ``SimpleQueue``: no I/O,
   no lock contention with the delivery thread, never raises.
2. The thread takes batches off the queue. While the spool is empty it sends them to Kafka
   (``acks=all``, one request in flight per connection, so the client's retries keep order) and
   waits for the acknowledgements up to ``kafka_delivery_timeout_seconds``.
3. If a send fails or times out, that event and every later one of the batch go to the spool,
   the producer is closed at once (aborting anything queued behind the failure so nothing newer
   can overtake it), and from then on *all* new events go to the spool behind the older ones.
4. With exponential back-off the thread re-sends the spool front to back, moving newly emitted
   events into the spool between batches; only when the spool is empty does it return to step 2.
   Hence per-topic order is the emit order. Delivery is at-least-once: an event whose ack was
   lost in the outage can arrive twice; consumers deduplicate by ``event_id``.
5. ``stop`` delivers or spools whatever is queued; ``start`` replays a spool left on disk by a
   previous process (the same code path as step 4).

References: the Kafka producer's ordering guarantee with ``max.in.flight.requests=1``
(Kafka docs, "Producer Configs"); the store-and-forward pattern of log shippers such as
Fluent Bit's filesystem buffering.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

from schemas.codec import encode_event
from schemas.events import EventBase
from serving.events import metrics
from serving.events.spool import DiskSpool, SpoolPosition, SpoolRecord
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

_TAKE_WAIT_SECONDS = 0.05  # how long the idle thread sleeps waiting for the next event
_FIRST_BACKOFF_SECONDS = 0.25


class EventLogger:
    """Asynchronous, order-preserving, spool-backed Kafka event producer."""

    def __init__(self, settings: ServingSettings) -> None:
        self._settings = settings
        self._topics = settings.topics()
        self._queue: queue.SimpleQueue[SpoolRecord] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._spool: DiskSpool | None = None
        self._producer: Any = None
        self._backoff = _FIRST_BACKOFF_SECONDS
        self._next_probe = 0.0
        # Per-instance tallies for counts(); the Prometheus counters are process-wide.
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()

    # ---- public API ------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._settings.kafka_enabled:
            logger.warning("kafka_enabled is false: events are counted as discarded, not sent")
            return
        # Import the client now, not in the delivery thread while requests emit: a heavy import
        # there would hold the GIL against the event loop.
        await asyncio.to_thread(importlib.import_module, "kafka")
        self._spool = await asyncio.to_thread(
            DiskSpool, self._settings.spool_dir, self._settings.spool_segment_bytes
        )
        if not self._spool.empty():
            logger.info(
                "replaying %d spooled events from %s", self._spool.depth, self._settings.spool_dir
            )
        metrics.SPOOL_DEPTH.set(self._spool.depth)
        self._thread = threading.Thread(target=self._run, name="event-logger", daemon=True)
        self._thread.start()

    def emit(self, event: EventBase) -> None:
        """Queue ``event`` for delivery; O(1), no I/O, never raises."""
        try:
            if self._thread is None:
                self._count("discarded")
                if self._settings.kafka_enabled:
                    logger.warning(
                        "event %s emitted while the logger is not running: discarded",
                        getattr(event, "kind", "?"),
                    )
                return
            kind = str(getattr(event, "kind"))  # noqa: B009 (EventBase declares no kind)
            record = SpoolRecord(
                self._topics.for_kind(kind), event.key().encode("utf-8"), encode_event(event)
            )
            self._queue.put(record)
            self._count("emitted")
        except Exception:  # a logging failure must never fail the request that emitted it
            self._count("invalid")
            logger.exception("could not encode event for Kafka; not logged")

    async def stop(self, timeout: float = 10.0) -> None:
        """Deliver or spool everything emitted so far, then stop (bounded by ``timeout``)."""
        thread = self._thread
        if thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout * 0.9
        self._stopping.set()
        await asyncio.to_thread(thread.join, timeout)
        self._thread = None  # from here on emit() discards (and counts) instead of queueing
        if thread.is_alive():
            logger.error(
                "event logger did not finish within %.1fs; %d events still queued",
                timeout,
                self._queue.qsize(),
            )
            return
        # Events emitted while the thread was finishing: spool them (no thread left to race).
        while leftover := self._take(wait=False):
            self._to_spool(leftover)

    def counts(self) -> dict[str, int]:
        """produced / spooled / dropped, plus emitted, replayed, discarded, invalid, depths."""
        with self._counts_lock:
            out = {
                k: self._counts[k]
                for k in (
                    "emitted",
                    "produced",
                    "spooled",
                    "dropped",
                    "replayed",
                    "discarded",
                    "invalid",
                )
            }
        out["queued"] = self._queue.qsize()
        out["spool_depth"] = self._spool.depth if self._spool else 0
        out["spool_corrupt"] = self._spool.corrupt_records if self._spool else 0
        return out

    # ---- delivery thread ---------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n

    def _run(self) -> None:
        assert self._spool is not None
        try:
            while True:
                stopping = self._stopping.is_set()
                batch = self._take(wait=not stopping)
                if batch:
                    self._handle(batch)
                if not self._spool.empty() and time.monotonic() >= self._next_probe:
                    self._drain_spool()
                metrics.QUEUE_DEPTH.set(self._queue.qsize())
                if stopping and self._queue.empty():
                    break
        except Exception:  # keep the reason in the log; events stay in the spool or queue
            logger.exception("event delivery thread crashed")
        finally:
            self._close_producer(graceful=True)

    def _take(self, wait: bool) -> list[SpoolRecord]:
        batch: list[SpoolRecord] = []
        try:
            if wait:
                batch.append(self._queue.get(timeout=_TAKE_WAIT_SECONDS))
            while len(batch) < self._settings.event_batch_size:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _handle(self, batch: list[SpoolRecord]) -> None:
        assert self._spool is not None
        if not self._spool.empty():
            self._to_spool(batch)  # behind the older spooled events
            return
        delivered = self._deliver(batch)
        if delivered < len(batch):
            self._to_spool(batch[delivered:])
            self._outage_started()

    def _drain_spool(self) -> None:
        """Re-send the spool oldest first; newly emitted events are queued behind it."""
        assert self._spool is not None
        while not self._spool.empty():
            self._to_spool(self._take(wait=False))
            records, positions = self._peek()
            if not records:
                break
            delivered = self._deliver(records)
            if delivered:
                self._spool.commit(positions[delivered - 1], delivered)
                self._count("replayed", delivered)
                metrics.SPOOL_DEPTH.set(self._spool.depth)
            if delivered < len(records):
                self._outage_started()
                return
            if self._stopping.is_set() and time.monotonic() >= self._stop_deadline:
                return
        logger.info("disk spool drained; delivering directly again")
        self._backoff = _FIRST_BACKOFF_SECONDS

    def _peek(self) -> tuple[list[SpoolRecord], list[SpoolPosition]]:
        assert self._spool is not None
        records, positions = [], []
        for record, after in self._spool.iter_pending(self._settings.event_batch_size):
            records.append(record)
            positions.append(after)
        return records, positions

    def _outage_started(self) -> None:
        self._next_probe = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._settings.spool_retry_max_seconds)

    def _to_spool(self, records: list[SpoolRecord]) -> None:
        if not records:
            return
        assert self._spool is not None
        try:
            self._spool.append(records)
        except OSError:
            self._count("dropped", len(records))
            metrics.EVENTS_DROPPED.inc(len(records))
            logger.exception("disk spool write failed: %d events lost", len(records))
            return
        self._count("spooled", len(records))
        for record in records:
            metrics.EVENTS_SPOOLED.labels(record.topic).inc()
        metrics.SPOOL_DEPTH.set(self._spool.depth)

    # ---- Kafka -------------------------------------------------------------------------------
    def _delivery_timeout(self) -> float:
        timeout = self._settings.kafka_delivery_timeout_seconds
        if self._stopping.is_set():
            timeout = max(0.5, min(timeout, self._stop_deadline - time.monotonic()))
        return timeout

    def _deliver(self, records: list[SpoolRecord]) -> int:
        """Send ``records`` in order; return how many from the front Kafka acknowledged."""
        timeout = self._delivery_timeout()
        producer = self._get_producer()
        if producer is None:
            return 0
        futures = []
        try:
            for record in records:
                futures.append(producer.send(record.topic, key=record.key, value=record.value))
        except Exception as exc:  # metadata wait timed out, producer closed, buffer full
            logger.warning(
                "Kafka send failed after %d of %d events: %s", len(futures), len(records), exc
            )
        deadline = time.monotonic() + timeout
        delivered = 0
        for future in futures:
            error = self._wait(future, deadline)
            if error is not None:
                logger.warning("Kafka delivery failed (%s); spooling to disk", error)
                break
            delivered += 1
        if delivered < len(records):
            # Abort whatever is still queued in the client so nothing newer overtakes the
            # failed event once the broker answers again.
            self._close_producer(graceful=False)
        self._count("produced", delivered)
        for record in records[:delivered]:
            metrics.EVENTS_PRODUCED.labels(record.topic).inc()
        return delivered

    def _wait(self, future: Any, deadline: float) -> Exception | None:
        """Wait for one send's ack; None on success. Polls in short slices so that a stop()
        arriving meanwhile shortens the wait to its own deadline."""
        from kafka.errors import KafkaTimeoutError

        while True:
            limit = min(deadline, self._stop_deadline)
            remaining = limit - time.monotonic()
            try:
                future.get(timeout=max(0.0, min(remaining, 0.25)))
                return None
            except KafkaTimeoutError as exc:
                if future.is_done or remaining <= 0.25:
                    return exc
            except Exception as exc:
                return exc

    def _get_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        from kafka import KafkaProducer

        timeout_ms = int(self._settings.kafka_delivery_timeout_seconds * 1000)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap.split(","),
                acks="all",
                enable_idempotence=False,
                # One request in flight: the client's own retries cannot reorder a partition.
                max_in_flight_requests_per_connection=1,
                linger_ms=5,
                request_timeout_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms + 5,
                max_block_ms=timeout_ms,
                bootstrap_timeout_ms=timeout_ms,
                retry_backoff_ms=100,
                reconnect_backoff_max_ms=1000,
            )
        except Exception as exc:
            logger.warning(
                "Kafka at %s unreachable (%s); spooling to disk",
                self._settings.kafka_bootstrap,
                exc,
            )
            return None
        return self._producer

    def _close_producer(self, graceful: bool) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=2.0 if graceful else 0.0)
        except Exception as exc:
            logger.debug("closing the Kafka producer: %s", exc)
