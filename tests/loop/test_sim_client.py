"""Simulated users and evaluation against the real serving HTTP app on the fake engine.

The fake engine's answers are deterministic in (prompt, adapter, seed, index), 3 to 12 words.
Here the other versions ramble (each answer said three times: 9 to 36 words, long enough for a
concise rewrite to shorten) and ``CONCISE`` says three words, so an evaluation that prefers
concise answers must favour it. What the users sent is read back from the recorded events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from loop.client import ChatResult, ServiceClient
from loop.eval import EvalConfig, EvalError, run_eval, write_outputs
from loop.preferences import word_count
from loop.sim import SimConfig, Simulator
from serving.app import create_app
from serving.engines.fake import FakeEngine
from serving.engines.protocol import BASE, GenerationRequest
from serving.security import user_hash
from tests.serving.fakes import FakeAdapters, RecordingEvents
from tests.serving.live import live_server
from tests.support.serving import ADMIN, API_KEY, HMAC_KEY, make_settings
from tests.support.sim_users import every_feedback_config

CONCISE = "policy@v1"
FEEDBACK = {"feedback.preference", "feedback.rating", "feedback.correction"}


class ConciseAdapterEngine(FakeEngine):
    """The fake engine; ``CONCISE`` answers in three words, the other versions ramble."""

    def _answers(self, request: GenerationRequest) -> list[tuple[list[str], bool]]:
        answers = super()._answers(request)
        if request.adapter == CONCISE:
            return [(words[:3], False) for words, _ in answers]
        return [(words * 3, truncated) for words, truncated in answers]


@dataclass
class Service:
    url: str
    engine: ConciseAdapterEngine
    events: RecordingEvents

    def of_kind(self, kind: str) -> list[Any]:
        return self.events.of_kind(kind)

    def kinds(self) -> set[str]:
        return {e.kind for e in self.events.events}


@contextmanager
def running_service(tmp_path: Path, **settings: Any) -> Iterator[Service]:
    engine = ConciseAdapterEngine()
    asyncio.run(engine.load_adapter(CONCISE, tmp_path))
    events = RecordingEvents()
    app = create_app(
        make_settings(**settings), engine=engine, events=events, adapters=FakeAdapters(engine)
    )
    with live_server(app) as (_server, port):
        yield Service(f"http://127.0.0.1:{port}", engine, events)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path) as running:
        yield running


def _sim(service: Service, **overrides: object) -> Simulator:
    config = every_feedback_config(service.url, API_KEY, comparisons=16, concurrency=4, seed=5)
    for key, value in overrides.items():
        setattr(config, key, value)
    return Simulator(config)


def test_sim_drives_pairs_and_votes_for_the_shorter_answer(service: Service) -> None:
    stats = asyncio.run(_sim(service).run())
    snap = stats.snapshot()
    pairs = {p.pair_id: p for p in service.of_kind("pair.served")}
    assert snap["pairs"] == 16 and len(pairs) == 16
    assert service.kinds() <= {"pair.served", *FEEDBACK}  # every chat asked for a pair
    sim_users = {
        user_hash(HMAC_KEY, API_KEY, f"sim-user-{i:03d}") for i in range(SimConfig().users)
    }
    assert {p.user_id for p in pairs.values()} <= sim_users
    prefs = service.of_kind("feedback.preference")
    assert len(prefs) == 16
    for vote in prefs:
        served = pairs[vote.pair_id]
        assert vote.user_id == served.user_id  # the voter is the user who was served
        lengths = [word_count(r.text) for r in served.responses]
        if lengths[0] == lengths[1]:
            assert vote.choice == "tie"
        else:
            assert vote.choice == ("a" if lengths[0] < lengths[1] else "b")
    answers = {r.response_id: (r.text, p.user_id) for p in pairs.values() for r in p.responses}
    ratings = service.of_kind("feedback.rating")
    corrections = service.of_kind("feedback.correction")
    assert len(ratings) == 16
    assert all(answers[r.response_id][1] == r.user_id for r in ratings)
    assert corrections, "correction_rate=1 must send corrections"
    for c in corrections:
        original = answers[c.response_id][0]
        assert word_count(c.text) < word_count(original)
    assert snap["feedback_ok"]["preference"] == 16
    assert snap["answers_by_version"][BASE]["answers"] == 32


def test_sim_counts_comparisons_not_requests_under_informative_pairing(tmp_path: Path) -> None:
    # Floor 0: a pair whose answers differ less than recent pairs' did may come back as one
    # answer; such a request asked the user nothing and must not use up a comparison.
    with running_service(tmp_path, pair_show_floor=0.0) as informative:
        sim = _sim(informative, comparisons=12, thumbs_rate=0.0, correction_rate=0.0)
        snap = asyncio.run(sim.run()).snapshot()
        votes = informative.of_kind("feedback.preference")
    assert snap["single"] > 0, "floor 0 must serve some pairs as one answer"
    assert snap["pairs"] == 12 and len(votes) == 12
    assert snap["requests"] == 12 + snap["single"]
    assert not snap["errors"]


def test_sim_k3_sends_a_ranking_best_first(service: Service) -> None:
    asyncio.run(_sim(service, k=3, comparisons=4, thumbs_rate=0.0, correction_rate=0.0).run())
    pairs = service.of_kind("pair.served")
    assert len(pairs) == 4 and all(len(p.responses) == 3 for p in pairs)
    texts = {r.response_id: r.text for p in pairs for r in p.responses}
    votes = service.of_kind("feedback.preference")
    assert len(votes) == 4 and service.kinds() == {"pair.served", "feedback.preference"}
    for vote in votes:
        words = [word_count(texts[r]) for r in vote.ranking]
        assert words == sorted(words)


def test_sim_rate_limit_spaces_requests(service: Service) -> None:
    start = time.monotonic()
    asyncio.run(_sim(service, comparisons=6, rate=10.0, thumbs_rate=0.0, correction_rate=0.0).run())
    # Six evenly spaced starts at 10/s: the last starts >= 0.5 s after the first.
    assert time.monotonic() - start >= 0.5


def test_sim_stops_on_request(service: Service) -> None:
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


def test_stopped_users_vote_again_after_resume(service: Service) -> None:
    """The acceptance run pauses its users while the learner trains and resumes them after:
    the same simulator goes on, its comparisons counted from the start."""
    sim = _sim(service, comparisons=2, thumbs_rate=0.0, correction_rate=0.0)
    sim.request_stop()
    asyncio.run(sim.run())
    assert sim.stats.snapshot()["pairs"] == 0  # stopped: nothing starts
    sim.resume()
    asyncio.run(sim.run())
    assert sim.stats.snapshot()["pairs"] == 2
    sim.config = dataclasses.replace(sim.config, comparisons=3)
    asyncio.run(sim.run())  # the budget counts from the start: one more
    assert sim.stats.snapshot()["feedback_ok"]["preference"] == 3


def _concise_vs_base(service: Service, **options: Any) -> EvalConfig:
    return EvalConfig(
        base_url=service.url,
        api_key=API_KEY,
        admin_token=ADMIN,
        version_a=CONCISE,
        version_b=BASE,
        **options,
    )


def test_eval_pins_versions_and_finds_the_concise_one(service: Service, tmp_path: Path) -> None:
    config = _concise_vs_base(service, limit=12, seed=3)
    progress: list[tuple[int, int]] = []
    report = asyncio.run(run_eval(config, progress=lambda *done: progress.append(done)))
    assert progress == [(i, 12) for i in range(1, 13)]  # one call per judged prompt
    assert (report.wins, report.losses, report.ties) == (12, 0, 0)
    assert report.interval()[0] > 0.7
    assert 0 < report.a_shown_first < 12  # sides were randomised
    assert {r.adapter for r in service.engine.requests} == {CONCISE, BASE}
    a, b = report.a.summary(), report.b.summary()
    assert a["mean_words"] < b["mean_words"]
    assert a["kl_source"] == "n/a" and b["kl"] == 0.0
    paths = write_outputs(report, tmp_path, config)
    assert paths["plot"].stat().st_size > 1000
    assert f"{CONCISE} vs {BASE}" in paths["markdown"].read_text()
    saved = json.loads(paths["json"].read_text())["answers"]
    assert len(saved) == 12 and all(set(r) == {"prompt", CONCISE, BASE} for r in saved)
    assert all(len(r[CONCISE].split()) < len(r[BASE].split()) for r in saved)


def test_eval_samples_each_prompt_several_times_with_its_own_seed(service: Service) -> None:
    config = _concise_vs_base(service, limit=4, samples=3, seed=5)
    report = asyncio.run(run_eval(config))
    assert report.n == 12
    prompts = [r["prompt"] for r in report.answers]
    assert len(set(prompts)) == 4 and all(prompts.count(p) == 3 for p in prompts)
    seeds = {(r.adapter, r.seed) for r in service.engine.requests}
    # both sides of a pair share a seed; the 12 pairs have 12 different ones
    assert {s for _, s in seeds} == set(range(5, 17))
    assert len(seeds) == 24


def test_eval_refuses_fewer_than_one_sample_per_prompt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loop.eval import main

    with pytest.raises(ValueError, match="samples must be 1 or more"):
        EvalConfig(samples=0)
    with pytest.raises(SystemExit):
        main(["--samples", "0"])
    assert "--samples: must be 1 or more, not 0" in capsys.readouterr().err


def test_eval_stops_when_the_server_refuses_the_pin(service: Service) -> None:
    config = EvalConfig(
        base_url=service.url, api_key=API_KEY, admin_token="wrong", version_a=CONCISE, limit=2
    )
    with pytest.raises(openai.PermissionDeniedError):
        asyncio.run(run_eval(config))
    assert CONCISE not in {r.adapter for r in service.engine.requests}


def test_eval_refuses_an_unhonoured_pin(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that ignores ``adapter_version`` answers with its serving version: the
    evaluation must stop rather than score the wrong model."""
    chat = ServiceClient.chat

    async def ignoring_pins(self: ServiceClient, prompt: str, **kwargs: Any) -> ChatResult:
        kwargs.pop("adapter_version", None)
        return await chat(self, prompt, **kwargs)

    monkeypatch.setattr(ServiceClient, "chat", ignoring_pins)
    config = EvalConfig(
        base_url=service.url, api_key=API_KEY, admin_token=ADMIN, version_a=CONCISE, limit=2
    )
    with pytest.raises(EvalError, match=f"asked for '{CONCISE}' but the server answered with"):
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
