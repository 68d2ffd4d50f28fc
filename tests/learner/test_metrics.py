"""Prometheus exposition of the learner's metrics on its own port: what the code records moves
the samples the endpoint serves (the metrics that cycles and ingestion set are checked where
those run: tests/learner/test_cycle.py, tests/learner/test_ingest_kafka.py)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from devtools.broker import free_port
from learner import metrics
from learner.ingest.ingestor import _publish_stats
from learner.store.records import BatchStats

SampleKey = tuple[str, frozenset[tuple[str, str]]]
CONSUMED = (
    "rlhf_learner_events_consumed_total",
    frozenset({("kind", "feedback.preference"), ("topic", "rlhf.feedback")}),
)
DECODE_ERRORS = ("rlhf_learner_decode_errors_total", frozenset({("reason", "malformed_json")}))
DROPPED = ("rlhf_learner_events_dropped_total", frozenset({("reason", "user_mismatch")}))
REWARD_UNDER_2S = (
    "rlhf_learner_stage_duration_seconds_bucket",
    frozenset({("le", "2.0"), ("stage", "reward")}),
)
REWARD_SUM = ("rlhf_learner_stage_duration_seconds_sum", frozenset({("stage", "reward")}))


def _scrape(port: int) -> dict[SampleKey, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_metrics_endpoint_serves_what_the_learner_records() -> None:
    port = free_port()
    metrics.serve_metrics(port)
    before = _scrape(port)
    _publish_stats(
        BatchStats(
            consumed={("rlhf.feedback", "feedback.preference"): 2},
            decode_errors={"malformed_json": 1},
            dropped={"user_mismatch": 1},
        )
    )
    metrics.STAGE_SECONDS.labels("reward").observe(1.5)
    after = _scrape(port)

    def moved(key: SampleKey) -> float:
        return after[key] - before.get(key, 0.0)

    assert moved(CONSUMED) == 2
    assert moved(DECODE_ERRORS) == 1
    assert moved(DROPPED) == 1
    assert moved(REWARD_UNDER_2S) == 1
    assert moved(REWARD_SUM) == 1.5
