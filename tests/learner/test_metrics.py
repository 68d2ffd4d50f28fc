"""Prometheus exposition of the learner's metrics on its own port."""

from __future__ import annotations

import urllib.request

from devtools.broker import free_port
from learner import metrics
from learner.ingest.ingestor import _publish_stats
from learner.store.records import BatchStats


def test_metrics_endpoint_serves_learner_metrics_with_units() -> None:
    stats = BatchStats(
        consumed={("rlhf.feedback", "feedback.preference"): 2},
        decode_errors={"malformed_json": 1},
        dropped={"user_mismatch": 1},
    )
    _publish_stats(stats)
    metrics.STAGE_SECONDS.labels("reward").observe(1.5)
    port = free_port()
    metrics.serve_metrics(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in (
        'rlhf_learner_events_consumed_total{kind="feedback.preference",topic="rlhf.feedback"}',
        'rlhf_learner_decode_errors_total{reason="malformed_json"}',
        'rlhf_learner_events_dropped_total{reason="user_mismatch"}',
        'rlhf_learner_stage_duration_seconds_bucket{le="2.0",stage="reward"}',
        "rlhf_learner_cycle_duration_seconds_count",
        "rlhf_learner_consumer_lag_messages",
        "rlhf_learner_store_size_bytes",
        "rlhf_learner_reward_model_accuracy_ratio",
        "rlhf_learner_policy_kl_nats",
    ):
        assert line in body, line
