"""Served pairs and votes reach the real broker through the real EventLogger."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devtools.broker import DevBroker
from schemas.codec import decode_event
from schemas.events import FeedbackPreference, PairServed
from serving.events.logger import EventLogger
from tests.support.kafka_read import read_topic
from tests.support.serving import (
    auth,
    harness,
    inner_pair_id,
    make_settings,
    metric_value,
    scrape,
)

pytestmark = [pytest.mark.kafka, pytest.mark.anyio]


def events_on(bootstrap: str, topic: str) -> list[object]:
    decoded = [decode_event(value) for _key, value in read_topic(bootstrap, topic)]
    return [d.event for d in decoded if d.ok]


async def test_pair_and_vote_reach_kafka(kafka_broker: DevBroker, tmp_path: Path) -> None:
    settings = make_settings(
        kafka_enabled=True,
        kafka_bootstrap=kafka_broker.bootstrap,
        spool_dir=str(tmp_path / "spool"),
    )
    logger = EventLogger(settings)
    async with harness(settings, events=logger) as h:
        before = await scrape(h)
        r = await h.http.post(
            "/v1/chat/completions",
            headers=auth(),
            json={"messages": [{"role": "user", "content": "kafka?"}], "pair": True, "user": "u"},
        )
        body = r.json()
        pair_id = inner_pair_id(h, body["pair_id"], "u")
        v = await h.http.post(
            "/v1/feedback",
            headers=auth(),
            json={"pair_id": body["pair_id"], "choice": "a", "user": "u"},
        )
        assert v.status_code == 200
        event_id = v.json()["event_id"]
        # The event logger's own metrics are exported beside the HTTP layer's, and move.
        for _ in range(600):
            if logger.counts().get("produced", 0) >= 2:
                break
            await asyncio.sleep(0.05)
        after = await scrape(h)
        for topic in (settings.topic_interactions, settings.topic_feedback):
            produced = "rlhf_serving_events_produced_total"
            moved = metric_value(after, produced, topic=topic) - metric_value(
                before, produced, topic=topic
            )
            assert moved >= 1, topic  # at least once: a re-send from the spool counts again
        pairs = "rlhf_serving_pairs_served_total"
        assert metric_value(after, pairs) - metric_value(before, pairs) == 1
    # Leaving the harness stopped the logger, which flushes.
    assert logger.counts().get("dropped", 0) == 0
    served = [
        e
        for e in events_on(kafka_broker.bootstrap, settings.topic_interactions)
        # The broker is shared with other tests: match this pair's exact id, never a substring.
        if isinstance(e, PairServed) and e.pair_id == pair_id
    ]
    # At-least-once: under load a produce that timed out is re-sent from the spool, as the very
    # same event (consumers dedupe by event_id); one event, possibly more than one copy.
    assert len({e.event_id for e in served}) == 1
    assert all(e == served[0] for e in served)
    pair = served[0]
    votes = [
        e
        for e in events_on(kafka_broker.bootstrap, settings.topic_feedback)
        if isinstance(e, FeedbackPreference) and e.event_id == event_id
    ]
    assert votes and all(v == votes[0] for v in votes) and votes[0].pair_id == pair.pair_id
    shown_a = body["choices"][0]["message"]["content"]
    assert pair.responses[0 if votes[0].choice == "a" else 1].text == shown_a
