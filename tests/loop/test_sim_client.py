"""Simulated users and evaluation against a fake HTTP service that obeys the API contract."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loop.eval import EvalConfig, EvalError, run_eval, write_outputs
from loop.preferences import NoiseConfig, word_count
from loop.sim import SimConfig, Simulator
from tests.loop.fake_service import ADMIN, FakeService


@pytest.fixture
def service() -> Iterator[FakeService]:
    with FakeService() as svc:
        yield svc


def _sim(service: FakeService, **overrides: object) -> Simulator:
    config = SimConfig(
        base_url=service.url,
        api_key="k",
        comparisons=16,
        concurrency=4,
        noise=NoiseConfig(0.0),
        thumbs_rate=1.0,
        correction_rate=1.0,
        seed=5,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return Simulator(config)


def test_sim_drives_pairs_and_votes_for_the_shorter_answer(service: FakeService) -> None:
    stats = asyncio.run(_sim(service).run())
    snap = stats.snapshot()
    assert snap["pairs"] == 16 and len(service.chats) == 16
    assert all(c["pair"] is True and c["user"].startswith("sim-user-") for c in service.chats)
    prefs = [f for f in service.feedback if "choice" in f or "ranking" in f]
    assert len(prefs) == 16
    for vote in prefs:
        served = service.served[vote["pair_id"]]
        assert vote["user"] == served["user"]  # the voter is the user who was served
        lengths = [word_count(a) for a in served["answers"]]
        if lengths[0] == lengths[1]:
            assert vote["choice"] == "tie"
        else:
            assert vote["choice"] == ("a" if lengths[0] < lengths[1] else "b")
    ratings = [f for f in service.feedback if "rating" in f]
    corrections = [f for f in service.feedback if "correction" in f]
    assert len(ratings) == 16
    assert all(service.responses[r["response_id"]]["user"] == r["user"] for r in ratings)
    assert corrections, "correction_rate=1 must send corrections"
    for c in corrections:
        original = service.responses[c["response_id"]]["text"]
        assert word_count(c["correction"]) < word_count(original)
    assert snap["feedback_ok"]["preference"] == 16
    assert snap["answers_by_version"]["base"]["answers"] == 32


def test_sim_k3_sends_a_ranking_best_first(service: FakeService) -> None:
    asyncio.run(_sim(service, k=3, comparisons=4, thumbs_rate=0.0, correction_rate=0.0).run())
    assert all(c["k"] == 3 for c in service.chats)
    for vote in service.feedback:
        words = [word_count(service.responses[r]["text"]) for r in vote["ranking"]]
        assert words == sorted(words)


def test_sim_rate_limit_spaces_requests(service: FakeService) -> None:
    start = time.monotonic()
    asyncio.run(_sim(service, comparisons=6, rate=10.0, thumbs_rate=0.0, correction_rate=0.0).run())
    # Six evenly spaced starts at 10/s: the last starts >= 0.5 s after the first.
    assert time.monotonic() - start >= 0.5


def test_sim_stops_on_request(service: FakeService) -> None:
    sim = _sim(service, comparisons=0, rate=20.0)

    async def go() -> None:
        task = asyncio.ensure_future(sim.run())
        # Stop once it is under way (a fixed sleep failed on a loaded 2-core machine).
        for _ in range(200):
            await asyncio.sleep(0.05)
            if sim.stats.snapshot()["pairs"] > 0:
                break
        sim.request_stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert 0 < sim.stats.snapshot()["pairs"] < 20


def test_eval_pins_versions_and_finds_the_concise_one(service: FakeService, tmp_path: Path) -> None:
    config = EvalConfig(
        base_url=service.url,
        admin_token=ADMIN,
        version_a="policy@v1",
        version_b="base",
        limit=12,
        seed=3,
    )
    progress: list[tuple[int, int]] = []
    report = asyncio.run(run_eval(config, progress=lambda *done: progress.append(done)))
    assert progress == [(i, 12) for i in range(1, 13)]  # one call per judged prompt
    assert (report.wins, report.losses, report.ties) == (12, 0, 0)
    assert report.interval()[0] > 0.7
    assert 0 < report.a_shown_first < 12  # sides were randomised
    assert {c["adapter_version"] for c in service.chats} == {"policy@v1", "base"}
    a, b = report.a.summary(), report.b.summary()
    assert a["mean_words"] < b["mean_words"]
    assert a["kl_source"] == "n/a" and b["kl"] == 0.0
    paths = write_outputs(report, tmp_path, config)
    assert paths["plot"].stat().st_size > 1000
    assert "policy@v1 vs base" in paths["markdown"].read_text()
    saved = json.loads(paths["json"].read_text())["answers"]
    assert len(saved) == 12 and all(set(r) == {"prompt", "policy@v1", "base"} for r in saved)
    assert all(len(r["policy@v1"].split()) < len(r["base"].split()) for r in saved)


def test_eval_refuses_an_unhonoured_pin(service: FakeService) -> None:
    config = EvalConfig(base_url=service.url, admin_token="wrong", version_a="policy@v1", limit=2)
    with pytest.raises(EvalError, match="asked for 'policy@v1'"):
        asyncio.run(run_eval(config))


def test_sim_stats_keep_a_bounded_window_of_pair_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    from loop import sim
    from loop.preferences import PreferenceOutcome

    monkeypatch.setattr(sim, "PAIR_VOTES_KEPT", 5)
    stats = sim.SimStats()
    for i in range(12):
        outcome = PreferenceOutcome(kind="choice", choice=0, utilities=(float(i), 0.0))
        stats.record_vote([], outcome)
    assert len(stats.pair_votes) == 5
    assert stats.pair_votes[-1][0] == (11.0, 0.0)
