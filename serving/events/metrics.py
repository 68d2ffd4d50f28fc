"""Prometheus metrics of the event logger (default registry, ``rlhf_serving_`` prefix)."""

from prometheus_client import Counter, Gauge

EVENTS_PRODUCED = Counter(
    "rlhf_serving_events_produced_total",
    "Events acknowledged by Kafka (directly or re-sent from the disk spool).",
    ["topic"],
)
EVENTS_SPOOLED = Counter(
    "rlhf_serving_events_spooled_total",
    "Events written to the local disk spool because Kafka was unreachable or slow.",
    ["topic"],
)
EVENTS_DROPPED = Counter(
    "rlhf_serving_events_dropped_total",
    "Events lost: only when the disk spool itself fails. Must stay 0.",
)
SPOOL_DEPTH = Gauge(
    "rlhf_serving_events_spool_depth",
    "Events waiting in the disk spool for Kafka to come back.",
)
QUEUE_DEPTH = Gauge(
    "rlhf_serving_events_queue_depth",
    "Events emitted and waiting in memory for the delivery thread.",
)
