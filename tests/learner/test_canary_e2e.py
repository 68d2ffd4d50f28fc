"""The canary end to end on the real broker: serving (the HTTP API, the real adapter manager
following the adapters topic) splits pairs between the serving version and the canary; a
simulated population votes through the API; the learner ingests the votes from Kafka and its
controller decides; every replica follows the decision from the topic."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from devtools.broker import DevBroker
from learner.canary import CanaryController, start_canary
from learner.ingest import Ingestor, KafkaSource
from learner.publish.announce import produce_event
from learner.settings import LearnerSettings
from loop.faults.adapters import write_version
from serving.adapters import AdapterManager
from serving.app import create_app
from serving.engines.fake import FakeEngine
from serving.events.logger import EventLogger
from tests.learner.factories import new_store
from tests.learner.kafka_helpers import fresh_topics, topic_settings
from tests.support.serving import API_KEY, auth, make_settings
from tests.support.waits import until

pytestmark = [pytest.mark.kafka, pytest.mark.anyio]


async def _population_votes(http: httpx.AsyncClient, prefers_canary: bool, n: int) -> None:
    """Users who can tell the versions apart and always prefer one of them."""
    for i in range(n):
        r = await http.post(
            "/v1/chat/completions",
            headers=auth(API_KEY),
            json={
                "messages": [{"role": "user", "content": f"q{i}"}],
                "pair": True,
                "user": f"u{i}",
            },
        )
        body = r.json()
        versions = [c["adapter_version"] for c in body["choices"]]
        assert sorted(versions) == ["policy@v1", "policy@v2"], versions  # canary_share 1.0
        liked = "policy@v2" if prefers_canary else "policy@v1"
        choice = "ab"[versions.index(liked)]
        vote = {"pair_id": body["pair_id"], "choice": choice, "user": f"u{i}"}
        assert (
            await http.post("/v1/feedback", headers=auth(API_KEY), json=vote)
        ).status_code == 200


@pytest.mark.parametrize("prefers_canary", [True, False])
async def test_the_users_votes_promote_or_roll_back_the_canary(
    tiny_model_dir: Path, tmp_path: Path, prefers_canary: bool
) -> None:
    topics = fresh_topics()
    store_dir = tmp_path / "adapters"
    v1 = write_version(store_dir, "policy", 1, tiny_model_dir, model_name="tiny")
    v2 = write_version(store_dir, "policy", 2, tiny_model_dir, model_name="tiny")
    with DevBroker(topics=topics.all(), log_path=tmp_path / "tansu.log") as broker:
        for event in (v1.published("tiny"), v2.published("tiny", canary=True)):
            produce_event(broker.bootstrap, topics.adapters, event)
        settings = make_settings(
            model_dir=str(tiny_model_dir),
            model_name="tiny",
            kafka_enabled=True,
            kafka_bootstrap=broker.bootstrap,
            spool_dir=str(tmp_path / "spool"),
            **topic_settings(topics),
            adapter_store=str(store_dir),
            adapter_cache_dir=str(tmp_path / "cache"),
            adapter_unload_grace_seconds=0.0,
            canary_share=1.0,
        )
        engine = FakeEngine()
        events = EventLogger(settings)
        manager = AdapterManager(settings, engine, events)
        app = create_app(settings, engine=engine, events=events, adapters=manager)
        transport = httpx.ASGITransport(app=app)
        learner = LearnerSettings(
            data_dir=str(tmp_path / "learner"),
            metrics_port=0,
            model_name="tiny",
            kafka_bootstrap=broker.bootstrap,
            **topic_settings(topics),
            canary=True,
            canary_min_votes=10,
        )
        store = new_store(tmp_path)
        start_canary(store, "policy@v2", "policy@v1")
        controller = CanaryController(
            learner,
            store,
            lambda event: produce_event(broker.bootstrap, topics.adapters, event),
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
        ):
            assert manager.serving_version() == "policy@v1"
            assert manager.canary_version() == "policy@v2"
            await _population_votes(http, prefers_canary, 40)
            source = KafkaSource(broker.bootstrap, [topics.interactions, topics.feedback])
            ingestor = Ingestor(store, source)
            ingestor.start()
            await until(
                lambda: ingestor.drain() >= 0 and len(store.comparisons()) >= 40, timeout=30.0
            )
            source.close()
            outcome = controller.tick()
            assert outcome == ("promoted" if prefers_canary else "rolled_back")
            expected = "policy@v2" if prefers_canary else "policy@v1"
            await until(
                lambda: manager.canary_version() is None and manager.serving_version() == expected,
                timeout=30.0,
            )
            # New pairs compare the serving version with itself again.
            r = await http.post(
                "/v1/chat/completions",
                headers=auth(API_KEY),
                json={"messages": [{"role": "user", "content": "after"}], "pair": True},
            )
            assert {c["adapter_version"] for c in r.json()["choices"]} == {expected}
