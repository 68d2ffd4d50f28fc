"""Prometheus metrics of the learner (default registry, prefix ``rlhf_learner_``, units in names).

Served by ``prometheus_client.start_http_server`` on ``settings.metrics_port`` (see
``learner.cli``). Durable counts that must survive restarts (decode errors, drops, offset
resets) also live in the training store's ``counters`` table; these are the live view.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

_STAGE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

EVENTS_CONSUMED = Counter(
    "rlhf_learner_events_consumed_total", "Events decoded and stored", ["topic", "kind"]
)
DECODE_ERRORS = Counter(
    "rlhf_learner_decode_errors_total", "Messages skipped because they did not decode", ["reason"]
)
UNKNOWN_FIELDS = Counter(
    "rlhf_learner_unknown_fields_total", "Unknown fields dropped while decoding", ["kind"]
)
EVENTS_DROPPED = Counter(
    "rlhf_learner_events_dropped_total",
    "Decoded events not used (duplicate, user mismatch, expired, bad ranking, ...)",
    ["reason"],
)
FEEDBACK_HELD = Gauge(
    "rlhf_learner_feedback_held", "Feedback events waiting for the content they refer to"
)
OFFSET_RESETS = Counter(
    "rlhf_learner_offset_resets_total",
    "Saved offsets outside what the broker holds (e.g. broker restart); resumed from beginning",
    ["topic"],
)
CONSUMER_LAG = Gauge(
    "rlhf_learner_consumer_lag_messages", "End offset minus next offset", ["topic", "partition"]
)
CONSUMER_STALLED = Gauge(
    "rlhf_learner_consumer_stalled_seconds",
    "How long the consumer has been behind the broker's end while its fetches return nothing "
    "(0 while it reads or is caught up)",
)
STORE_ROWS = Gauge("rlhf_learner_store_rows", "Rows in the training store", ["table"])
STORE_SIZE = Gauge("rlhf_learner_store_size_bytes", "Size of the SQLite training store file")
CYCLE_SECONDS = Histogram(
    "rlhf_learner_cycle_duration_seconds", "Wall time of a training cycle", buckets=_STAGE_BUCKETS
)
STAGE_SECONDS = Histogram(
    "rlhf_learner_stage_duration_seconds",
    "Wall time of one cycle stage",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
GATE_OUTCOMES = Counter("rlhf_learner_gate_outcomes_total", "Gate decisions", ["gate", "outcome"])
CYCLES = Counter("rlhf_learner_cycles_total", "Finished cycles by outcome", ["outcome"])
LAST_RM_ACCURACY = Gauge(
    "rlhf_learner_reward_model_accuracy_ratio", "Held-out accuracy of the last reward model"
)
LAST_KL = Gauge("rlhf_learner_policy_kl_nats", "Mean KL(policy||reference) of the last candidate")
LAST_REWARD_GAIN = Gauge(
    "rlhf_learner_reward_gain", "Held-out reward gain of the last candidate over its parent"
)
LAST_VERSION = Gauge("rlhf_learner_published_version_number", "Number N of the last policy@vN")
# Where the learner is between and inside cycles, for dashboards (``rlhf-demo``) and progress
# lines (``bench/acceptance.py``): how far the next cycle is, which stage runs, how far it got.
NEW_COMPARISONS = Gauge(
    "rlhf_learner_new_comparisons", "Comparisons stored since the last cycle's snapshot"
)
CYCLE_TRIGGER = Gauge(
    "rlhf_learner_cycle_trigger_comparisons",
    "New comparisons that start a cycle (LEARNER_MIN_NEW_COMPARISONS)",
)
CYCLE_STAGE = Gauge(
    "rlhf_learner_cycle_stage", "1 for the stage the running cycle is in, else 0", ["stage"]
)
STAGE_STEP = Gauge("rlhf_learner_stage_step", "Optimiser steps done in the running stage")
STAGE_STEPS = Gauge(
    "rlhf_learner_stage_steps", "Optimiser steps the running stage will take (0 = not known)"
)


def set_running_stage(stage: str | None, stages: tuple[str, ...]) -> None:
    """Mark ``stage`` as the running one (None: no cycle runs); its step count starts over."""
    for name in stages:
        CYCLE_STAGE.labels(name).set(1.0 if name == stage else 0.0)
    STAGE_STEP.set(0)
    STAGE_STEPS.set(0)


def stage_progress(step: int, total: int) -> None:
    """Called by the training loops after each optimiser step. In a launched stage
    (``LEARNER_TRAIN_LAUNCHER``) it runs in the worker process, whose metrics nobody serves: the
    stage then shows without its step count."""
    STAGE_STEP.set(step)
    STAGE_STEPS.set(total)


def serve_metrics(port: int) -> None:
    """Expose /metrics on ``port`` (0 = disabled)."""
    if port:
        start_http_server(port)
        logger.info("metrics on :%d/metrics", port)
