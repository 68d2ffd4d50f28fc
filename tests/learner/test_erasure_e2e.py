"""Erasure end to end on the real broker: an admin call on serving emits ``user.erased``
through the event logger; the learner's ingestion deletes what it stored of that user, drops
the user's events still on the topics, and the next manifest records the erasure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.broker import DevBroker
from learner.ingest import Ingestor, KafkaSource
from serving.events.logger import EventLogger
from tests.learner.factories import new_store
from tests.learner.kafka_helpers import fresh_topics, topic_settings
from tests.learner.test_cycle import make_runner
from tests.support.serving import ADMIN, API_KEY, auth, harness, make_settings

pytestmark = [pytest.mark.kafka, pytest.mark.anyio]


async def _pair_and_vote(h: Any, user: str, prompt: str) -> None:
    r = await h.http.post(
        "/v1/chat/completions",
        headers=auth(),
        json={"messages": [{"role": "user", "content": prompt}], "pair": True, "user": user},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    vote = {"pair_id": body["pair_id"], "choice": "a", "user": user}
    assert (await h.http.post("/v1/feedback", headers=auth(), json=vote)).status_code == 200
    rid = body["choices"][0]["response_id"]
    fix = {"response_id": rid, "correction": f"better answer for {user}", "user": user}
    assert (await h.http.post("/v1/feedback", headers=auth(), json=fix)).status_code == 200


async def test_erasure_from_the_admin_api_reaches_the_store_and_the_manifest(
    tmp_path: Path,
) -> None:
    topics = fresh_topics()
    with DevBroker(topics=topics.all(), log_path=tmp_path / "tansu.log") as broker:
        settings = make_settings(
            kafka_enabled=True,
            kafka_bootstrap=broker.bootstrap,
            spool_dir=str(tmp_path / "spool"),
            **topic_settings(topics),
        )
        async with harness(settings, events=EventLogger(settings)) as h:
            for i in range(3):
                await _pair_and_vote(h, "alice", f"alice asks {i}")
                await _pair_and_vote(h, "bob", f"bob asks {i}")
            by_name = {"user": "alice", "api_key": API_KEY}
            r = await h.http.post("/admin/users/erase", headers=auth(ADMIN), json=by_name)
            assert r.status_code == 202
            alice = r.json()["user_id"]
            await _pair_and_vote(h, "alice", "alice again, after her erasure")
        # The logger flushed on leaving the harness: everything is on the topics.
        store = new_store(tmp_path)
        source = KafkaSource(broker.bootstrap, [topics.interactions, topics.feedback])
        ingestor = Ingestor(store, source)
        ingestor.start()
        ingestor.drain()
        source.close()

    users = {row[0] for row in store.conn.execute("SELECT user_id FROM served")}
    assert alice not in users and len(users) == 1
    # At least her pair, vote and correction after the erasure; more if the learner read the
    # erasure (feedback topic) before some of her earlier pairs (interactions topic).
    assert store.counters()["dropped"]["user_erased"] >= 3
    assert len(store.comparisons()) == 3 and len(store.sft_examples()) == 3
    runner = make_runner(tmp_path, store)
    ckpt = runner.run()
    assert ckpt.outcome == "published"
    honoured = runner.adapters.manifest(1).config["erasures_honoured"]
    assert [e["user_id"] for e in honoured] == [alice]
