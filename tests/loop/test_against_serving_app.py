"""Simulated users against the real serving HTTP app (fake engine, recorded events): signed
pair ids verify, and every vote lands on the answer the user preferred, in canonical order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from loop.preferences import word_count
from loop.sim import Simulator
from serving.app import create_app
from serving.engines.fake import FakeEngine
from tests.serving.fakes import FakeAdapters, RecordingEvents
from tests.serving.live import live_server
from tests.support.serving import API_KEY, make_settings
from tests.support.sim_users import every_feedback_config


@pytest.fixture
def served() -> Iterator[tuple[str, Any]]:
    engine = FakeEngine()
    events = RecordingEvents()
    app = create_app(make_settings(), engine=engine, events=events, adapters=FakeAdapters(engine))
    with live_server(app) as (_server, port):
        yield f"http://127.0.0.1:{port}", (API_KEY, events)


def test_sim_votes_are_accepted_and_mapped_to_canonical_order(served: tuple[str, Any]) -> None:
    url, (api_key, events) = served
    config = every_feedback_config(url, api_key, comparisons=12, concurrency=3, seed=2)
    snap = asyncio.run(Simulator(config).run()).snapshot()
    assert snap["errors"] == {} and snap["feedback_failed"] == {}
    assert snap["feedback_ok"]["preference"] == 12 and snap["feedback_ok"]["rating"] == 12
    counts = {
        k: len(events.of_kind(k))
        for k in ("pair.served", "feedback.preference", "feedback.rating", "feedback.correction")
    }
    assert counts["pair.served"] == 12
    assert counts["feedback.preference"] == 12
    assert counts["feedback.rating"] == 12
    assert counts["feedback.correction"] == snap["feedback_ok"].get("correction", 0)
    pairs = {e.pair_id: e for e in events.of_kind("pair.served")}
    checked = 0
    for vote in events.of_kind("feedback.preference"):
        pair = pairs[vote.pair_id]
        assert vote.user_id == pair.user_id
        lengths = [word_count(r.text) for r in pair.responses]
        if lengths[0] != lengths[1]:
            assert vote.choice == ("a" if lengths[0] < lengths[1] else "b")
            checked += 1
        else:
            assert vote.choice == "tie"
    assert checked > 0, "the fake engine gave equal lengths everywhere: nothing was checked"
