"""Informative pairing (serving.pair_sampling): pairs whose answers differ little are asked about
less often, down to a floor; canary pairs always."""

from __future__ import annotations

import random

import pytest

from schemas.events import PairServed, ResponseServed
from serving import chat
from serving.pair_sampling import (
    RecentDifferences,
    answer_difference,
    show_pair,
    show_probability,
)
from tests.support.serving import auth, harness, inner_response_id, make_settings

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.mark.unit
def test_difference_is_zero_for_the_same_words_and_one_for_none_in_common() -> None:
    assert answer_difference(["a b c", "a b c"]) == 0.0
    assert answer_difference(["a b c", "x y z"]) == 1.0
    # A longer answer with the same start differs by its extra words.
    longer = ["one two three four", "one two three four five six"]
    assert answer_difference(longer) == pytest.approx(0.2)
    # K answers: the least similar one counts.
    assert answer_difference(["a b", "a b", "x y"]) == 1.0


@pytest.mark.unit
def test_show_probability_rises_from_the_floor_to_one() -> None:
    assert show_probability(0.0, 0.2) == pytest.approx(0.2)
    assert show_probability(0.5, 0.2) == pytest.approx(0.6)
    assert show_probability(1.0, 0.2) == 1.0


@pytest.mark.unit
def test_rank_among_recent_pairs_with_ties_and_a_window() -> None:
    recent = RecentDifferences(size=4)
    assert recent.rank(0.5) == 1.0  # no history yet: shown
    assert recent.rank(0.9) == 1.0  # above the one before
    assert recent.rank(0.1) == 0.0
    assert recent.rank(0.5) == pytest.approx((1 + 0.5) / 3)  # 0.1 below, one tie at 0.5
    recent.rank(0.95)  # the window now drops the first 0.5
    assert recent._sorted == [0.1, 0.5, 0.9, 0.95]
    assert recent.rank(0.7) == pytest.approx(2 / 4)


@pytest.mark.unit
def test_floor_sets_the_share_of_pairs_shown() -> None:
    rng = random.Random(0)
    recent = RecentDifferences(size=1000)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    pairs = []
    for _ in range(3000):
        a = rng.sample(words, 6)
        b = a[: rng.randrange(7)] + rng.sample(words, 6 - len(a[: rng.randrange(7)]))
        pairs.append([" ".join(a), " ".join(b)])
    shown = sum(show_pair(p, 0.2, recent, rng) for p in pairs) / len(pairs)
    assert abs(shown - 0.6) < 0.04  # floor + (1 - floor) x mean rank (1/2)
    assert all(show_pair(p, 1.0, recent, rng) for p in pairs[:100])  # floor 1: always


@pytest.mark.anyio
async def test_a_pair_not_shown_serves_its_first_answer_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chat, "show_pair", lambda *args: False)
    async with harness(make_settings(pair_show_floor=0.0)) as h:
        r = await h.http.post(
            "/v1/chat/completions", json={"messages": HELLO, "pair": True}, headers=auth()
        )
        body = r.json()
        assert r.status_code == 200 and body["pair_id"] is None
        (choice,) = body["choices"]
        (event,) = h.events.events
        assert isinstance(event, ResponseServed)
        assert event.response.text == choice["message"]["content"]
        rid = inner_response_id(h, choice["response_id"], None)
        assert event.response.response_id == rid
        # A thumb on the answer served alone is accepted.
        fb = await h.http.post(
            "/v1/feedback",
            json={"response_id": choice["response_id"], "rating": "up"},
            headers=auth(),
        )
        assert fb.status_code == 200, fb.text


@pytest.mark.anyio
async def test_canary_pairs_are_always_shown(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(chat, "show_pair", lambda *args: False)
    async with harness(make_settings(pair_show_floor=0.0, canary_share=1.0)) as h:
        for v in ("policy@v1", "policy@v2"):
            await h.engine.load_adapter(v, tmp_path)
        h.adapters.serving, h.adapters.canary = "policy@v1", "policy@v2"
        r = await h.http.post(
            "/v1/chat/completions", json={"messages": HELLO, "pair": True}, headers=auth()
        )
        assert r.json()["pair_id"] and isinstance(h.events.events[-1], PairServed)
