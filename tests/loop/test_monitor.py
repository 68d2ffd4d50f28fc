"""What the demo reads: Prometheus text, admin state, Kafka event counts; dashboard rendering."""

from __future__ import annotations

import argparse

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from devtools.broker import DevBroker
from loop.dashboard import Observation, render_text
from loop.monitor import (
    AdapterEvent,
    adapter_event,
    count_events,
    metric_labels,
    metric_sum,
    scrape,
)
from loop.service_options import add_env_option, env_pairs
from schemas.events import AdapterPromoted, AdapterPublished, AdapterRolledBack
from tests.serving.live import live_server


def _metrics_text() -> str:
    registry = CollectorRegistry()
    produced = Counter("rlhf_serving_events_produced_total", "x", ["topic"], registry=registry)
    produced.labels("rlhf.interactions").inc(5)
    produced.labels("rlhf.feedback").inc(7)
    Gauge("rlhf_learner_policy_kl_nats", "x", registry=registry).set(0.125)
    return generate_latest(registry).decode()


def test_scrape_parses_prometheus_text_and_sums_by_label() -> None:
    app = FastAPI()
    app.get("/metrics", response_class=PlainTextResponse)(_metrics_text)
    with live_server(app) as (_server, port):
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    assert metric_sum(metrics, "rlhf_serving_events_produced_total") == 12
    assert metric_sum(metrics, "rlhf_serving_events_produced_total", topic="rlhf.feedback") == 7
    assert metric_labels(metrics, "rlhf_serving_events_produced_total", "topic") == {
        "rlhf.interactions": 5,
        "rlhf.feedback": 7,
    }
    assert metrics["rlhf_learner_policy_kl_nats"] == 0.125
    assert scrape("http://127.0.0.1:9/metrics", timeout=0.5) == {}  # down: empty, no raise


def test_render_text_shows_the_loop_state() -> None:
    obs = Observation(
        preference="concise",
        elapsed=12.0,
        sim={
            "pairs": 3,
            "votes": {"choice": 3},
            "feedback_ok": {"preference": 3},
            "answers_by_version": {
                "policy@v1": {"answers": 2, "mean_words": 5.0, "mean_utility": -0.2}
            },
            "head_to_head": {"base vs policy@v1": {"score_first": 1.0, "n": 4}},
        },
        serving_metrics={"rlhf_serving_pairs_served_total": 3.0},
        learner_metrics={"rlhf_learner_policy_kl_nats": 0.05},
        adapters={"serving_version": "policy@v1", "canary_version": None},
        adapter_events=[AdapterEvent("adapter.published", "policy@v1", "t")],
        learner_state="running",
        eval_line="policy@v1: win rate 0.75",
    )
    text = render_text(obs)
    assert "3 (serving counts 3)" in text and "answers policy@v1" in text
    assert "base vs policy@v1: 0.25 of 4" in text
    assert "KL - nats" in text  # a gauge's 0 before any cycle finished is no figure yet


def test_env_pairs() -> None:
    assert env_pairs(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(Exception, match="KEY=VALUE"):
        env_pairs(["nope"])


def test_env_pairs_refuses_a_key_without_the_service_prefix() -> None:
    assert env_pairs(["LEARNER_SEED=3"], "LEARNER_") == {"LEARNER_SEED": "3"}
    with pytest.raises(Exception, match="did you mean 'LEARNER_REWARD_CONFIG'"):
        env_pairs(['REWARD_CONFIG={"pooling": "last"}'], "LEARNER_")


def test_a_setting_without_its_prefix_is_a_usage_error_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = argparse.ArgumentParser(prog="bench")
    add_env_option(p, "learner")
    assert p.parse_args(["--learner-env", "LEARNER_SEED=3"]).learner_env == ["LEARNER_SEED=3"]
    with pytest.raises(SystemExit) as stopped:
        p.parse_args(["--learner-env", "SEED=3"])
    assert stopped.value.code == 2
    assert "did you mean 'LEARNER_SEED'" in capsys.readouterr().err


@pytest.mark.kafka
def test_count_events_reads_every_topic_to_the_end(kafka_broker: DevBroker) -> None:
    from kafka import KafkaProducer

    from schemas import FeedbackRating, encode_event

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    topic = "loop.test.count"
    before = count_events(kafka_broker.bootstrap, [topic])
    for i in range(5):
        event = FeedbackRating(response_id=f"r{i}", user_id="u", rating="up")
        producer.send(topic, encode_event(event))
    producer.send(topic, b"not json")
    producer.flush()
    producer.close()
    after = count_events(kafka_broker.bootstrap, [topic])
    assert after["feedback.rating"] - before.get("feedback.rating", 0) == 5
    assert after["invalid"] - before.get("invalid", 0) == 1


def test_adapter_events_keep_the_canary_and_its_decision() -> None:
    sha = "0" * 64
    published = adapter_event(
        AdapterPublished(
            model_name="m",
            version="policy@v2",
            uri="/s",
            manifest_sha256=sha,
            promote=False,
            canary=True,
        )
    )
    assert (published.kind, published.version, published.canary) == (
        "adapter.published",
        "policy@v2",
        True,
    )
    evidence = {"wins": 30, "losses": 10, "ties": 2, "win_low": 0.55, "win_high": 0.88}
    promoted = adapter_event(
        AdapterPromoted(
            model_name="m", version="policy@v2", previous_version="policy@v1", evidence=evidence
        )
    )
    assert promoted.from_version == "policy@v1" and promoted.evidence == evidence
    assert promoted.decides("policy@v2") and not promoted.decides("policy@v1")
    rolled_back = adapter_event(
        AdapterRolledBack(
            model_name="m", from_version="policy@v3", to_version="policy@v2", reason="canary: x"
        )
    )
    assert (rolled_back.version, rolled_back.from_version) == ("policy@v2", "policy@v3")
    assert rolled_back.reason == "canary: x" and rolled_back.evidence is None
    assert rolled_back.decides("policy@v3") and not rolled_back.decides("policy@v2")
    assert not published.decides("policy@v2")  # published is not a decision
