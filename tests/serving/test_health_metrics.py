"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.app import create_app
from serving.engines.fake import FakeEngine
from tests.serving.fakes import FakeAdapters, RecordingEvents
from tests.support.serving import auth, harness, make_settings, metric_value, scrape

pytestmark = pytest.mark.anyio


async def test_ready_only_after_engine_and_adapter() -> None:
    engine = FakeEngine(start_delay=0.3)
    adapters = FakeAdapters(engine)
    app = create_app(make_settings(), engine=engine, events=RecordingEvents(), adapters=adapters)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        lifespan = app.router.lifespan_context(app)
        starting = asyncio.create_task(lifespan.__aenter__())
        await asyncio.sleep(0.05)
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503
        await starting
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["serving_version"] == "base"
        adapters.without_topic = True  # started during a Kafka outage: serves, degraded
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "degraded"
        assert r.json()["degraded"] is True
        adapters.without_topic = False
        adapters.started = False  # e.g. the serving adapter failed to load
        assert (await http.get("/readyz")).status_code == 503
        await lifespan.__aexit__(None, None, None)


async def test_metrics_count_requests_pairs_feedback_and_engine() -> None:
    async with harness() as h:
        before = await scrape(h)
        r = await h.http.post(
            "/v1/chat/completions",
            headers=auth(),
            json={"messages": [{"role": "user", "content": "hi"}], "pair": True},
        )
        await h.http.post(
            "/v1/feedback", headers=auth(), json={"pair_id": r.json()["pair_id"], "choice": "tie"}
        )
        await h.http.post("/v1/chat/completions", headers=auth(), json={"messages": []})
        after = await scrape(h)

        def delta(name, **labels):
            return metric_value(after, name, **labels) - metric_value(before, name, **labels)

        chat = {"route": "/v1/chat/completions", "method": "POST"}
        assert delta("rlhf_serving_http_requests_total", **chat, status="200") == 1
        assert delta("rlhf_serving_http_requests_total", **chat, status="400") == 1
        assert (
            delta("rlhf_serving_http_request_duration_seconds_count", route="/v1/chat/completions")
            == 2
        )
        assert delta("rlhf_serving_pairs_served_total") == 1
        assert delta("rlhf_serving_feedback_total", kind="preference", value="tie") == 1
        completion = sum(x.completion_tokens for x in h.events.events[0].responses)
        assert delta("rlhf_serving_completion_tokens_total") == completion
        assert metric_value(after, "rlhf_serving_engine_tokens_generated") >= completion
        assert metric_value(after, "rlhf_serving_adapter_info", role="serving", version="base") == 1
        assert metric_value(after, "rlhf_serving_engine_batch_size") == 2


async def test_in_flight_and_engine_gauges_follow_a_running_request() -> None:
    engine = FakeEngine(token_delay=0.05)
    async with harness(engine=engine) as h:
        chat = asyncio.ensure_future(
            h.http.post(
                "/v1/chat/completions",
                headers=auth(),
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 12},
            )
        )
        for _ in range(200):
            if engine.stats().running:
                break
            await asyncio.sleep(0.005)
        during = await scrape(h)
        assert (await chat).status_code == 200
        after = await scrape(h)
        # The chat and the scrape itself while the chat runs; the scrape alone afterwards.
        assert metric_value(during, "rlhf_serving_http_requests_in_flight") == 2
        assert metric_value(after, "rlhf_serving_http_requests_in_flight") == 1
        assert metric_value(during, "rlhf_serving_engine_running") == 1
        assert metric_value(after, "rlhf_serving_engine_running") == 0
        # The queue depth is the engine's own figure (the fake engine never queues: report one).
        waiting = engine.stats()
        waiting.queue_depth = 3
        h.engine.stats = lambda: waiting  # type: ignore[method-assign]
        assert metric_value(await scrape(h), "rlhf_serving_engine_queue_depth") == 3


async def test_unknown_route_is_openai_shaped_404() -> None:
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    async with harness() as h:
        before = metric_value(
            await scrape(h),
            "rlhf_serving_http_requests_total",
            **unmatched,
        )
        r = await h.http.get("/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        after = await scrape(h)
        assert metric_value(after, "rlhf_serving_http_requests_total", **unmatched) == before + 1


async def test_failed_start_stops_what_already_started() -> None:
    engine, events = FakeEngine(), RecordingEvents()
    adapters = FakeAdapters(engine)

    async def broken_start() -> None:
        raise RuntimeError("adapter store unreachable")

    adapters.start = broken_start  # type: ignore[method-assign]
    app = create_app(make_settings(), engine=engine, events=events, adapters=adapters)
    with pytest.raises(RuntimeError, match="unreachable"):
        async with app.router.lifespan_context(app):
            pass
    assert events.stopped and not engine.started
    assert not app.state.services.engine_started
