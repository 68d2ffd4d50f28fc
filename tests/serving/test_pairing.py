"""Pair planning: K answers from the serving version, or split with the canary; random order."""

from __future__ import annotations

import random
from collections import Counter

from schemas.events import ChatMessage
from serving.engines.protocol import GenerationRequest
from serving.pairing import plan_pair

BASE_REQUEST = GenerationRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=8)


def test_without_canary_one_request_with_n_k() -> None:
    plan = plan_pair(BASE_REQUEST, 3, "policy@v2", None, random.Random(0))
    assert [(r.adapter, r.n) for r in plan.requests] == [("policy@v2", 3)]
    assert sorted(plan.shown_order) == [0, 1, 2]
    assert plan.canonical_adapters() == ["policy@v2"] * 3


def test_canary_splits_answers_between_versions() -> None:
    plan = plan_pair(BASE_REQUEST, 2, "policy@v2", "policy@v3", random.Random(0))
    assert [(r.adapter, r.n) for r in plan.requests] == [("policy@v2", 1), ("policy@v3", 1)]
    assert plan.canonical_adapters() == ["policy@v2", "policy@v3"]
    plan4 = plan_pair(BASE_REQUEST, 4, "policy@v2", "policy@v3", random.Random(0))
    assert Counter(plan4.canonical_adapters()) == {"policy@v2": 2, "policy@v3": 2}
    same = plan_pair(BASE_REQUEST, 2, "policy@v2", "policy@v2", random.Random(0))
    assert len(same.requests) == 1


def test_display_order_is_random_and_unbiased() -> None:
    rng = random.Random(1234)
    firsts = Counter(plan_pair(BASE_REQUEST, 2, "a", "b", rng).shown_order[0] for _ in range(2000))
    # Binomial(2000, 0.5): 5 standard deviations is about +-112.
    assert abs(firsts[0] - 1000) < 112 and firsts[0] + firsts[1] == 2000
