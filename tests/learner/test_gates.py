"""Gate decisions are pure functions of the metrics and the settings' thresholds."""

from __future__ import annotations

import math
import random

import pytest
import torch
from prometheus_client import REGISTRY

from learner.gates import (
    classify_reward_model,
    classify_reward_model_on,
    count_reward_verdict,
    eval_gates,
    first_failure,
    leans_toward,
    reward_gate,
    reward_gate_on,
    wilson_lower_bound,
)
from learner.rm.loss import pairwise_stats


def test_reward_gate_threshold_is_inclusive() -> None:
    assert reward_gate(0.55, 100, 0.55, confidence=0).passed
    assert not reward_gate(0.549, 100, 0.55, confidence=0).passed
    assert not reward_gate(None, 100, 0.0).passed


def test_wilson_lower_bound_by_hand() -> None:
    # 8 of 10, one-sided 95 % (z = 1.6449):
    # (0.8 + z^2/20 - z sqrt(0.016 + z^2/400)) / (1 + z^2/10) = 0.5408
    assert abs(wilson_lower_bound(8, 10, 0.95) - 0.5408) < 1e-3
    assert wilson_lower_bound(0, 0, 0.95) == 0.0


def test_reward_gate_needs_evidence_against_chance() -> None:
    assert not reward_gate(0.6, 25, 0.55).passed  # 15 of 25 is not better than chance
    assert reward_gate(0.6, 300, 0.55).passed
    assert not reward_gate(1.0, 0, 0.55).passed  # nothing held out: no evidence


def test_reward_gate_tells_a_good_model_from_a_random_one() -> None:
    """Simulated held-out votes (100, as 20 % of 500 comparisons): a chance-level model passes
    at most about 5 % of the time, one agreeing with 70 % of the votes nearly always."""
    rng = random.Random(0)

    def pass_rate(agreement: float) -> float:
        runs = 400
        passed = 0
        for _ in range(runs):
            hits = sum(rng.random() < agreement for _ in range(100))
            passed += reward_gate(hits / 100, 100, 0.5).passed
        return passed / runs

    assert pass_rate(0.5) < 0.08
    assert pass_rate(0.7) > 0.95


def _held_out_margins(rng: random.Random, skill: float, votes: int = 100) -> list[float]:
    """Margins r(chosen) - r(rejected) of simulated held-out votes where 60 % of the pairs are
    equal to the users (coin-flip votes): the reward model's score difference is ``skill`` times
    the utility difference plus unit noise."""
    margins = []
    for _ in range(votes):
        gap = rng.expovariate(1 / 1.5) * rng.choice((-1, 1)) if rng.random() < 0.4 else 0.0
        first_chosen = rng.random() < 1 / (1 + math.exp(-gap))
        score_gap = skill * gap + rng.gauss(0, 1)
        margins.append(score_gap if first_chosen else -score_gap)
    return margins


def _gate_on_margins(margins: list[float], ranks: bool) -> bool:
    diff = torch.tensor(margins)
    stats = pairwise_stats(diff, torch.zeros_like(diff))
    stats["eval_count"] = float(len(margins))
    if not ranks:
        del stats["signed_rank_z"]  # what a trainer without it reports: the Wilson fallback
    return reward_gate_on(stats, 0.5, 0.95).passed


def test_signed_rank_gate_finds_a_weak_preference_the_accuracy_gate_misses() -> None:
    """Most votes coin flips (a tone most answers lack): the signed-rank gate passes a good
    reward model far more often than the accuracy gate, and a chance-level one as rarely."""
    rng = random.Random(1)
    runs = 300
    rates = {}
    for skill in (0.0, 1.0):
        trials = [_held_out_margins(rng, skill) for _ in range(runs)]
        rates[skill] = [
            sum(_gate_on_margins(m, ranks) for m in trials) / runs for ranks in (False, True)
        ]
    (chance_acc, chance_ranks), (good_acc, good_ranks) = rates[0.0], rates[1.0]
    assert chance_acc < 0.09 and chance_ranks < 0.09
    assert good_ranks > 0.65 and good_ranks > good_acc + 0.15


def test_reward_gate_reason_names_the_test_used() -> None:
    with_z = reward_gate_on(
        {"accuracy": 0.53, "eval_count": 100.0, "signed_rank_z": 2.1}, 0.5, 0.95
    )
    assert with_z.passed and "signed-rank z 2.10 > 1.64 (95% one-sided)" in with_z.reason
    without = reward_gate_on({"accuracy": 0.53, "eval_count": 100.0}, 0.5, 0.95)
    assert not without.passed and "lower bound" in without.reason


def test_eval_gates_each_can_fail_alone() -> None:
    ok = eval_gates(0.1, 0.2, 0.5, [])
    assert [d.passed for d in ok] == [True, True, True]
    assert [d.passed for d in eval_gates(0.0, 0.2, 0.5, [])] == [False, True, True]
    assert [d.passed for d in eval_gates(0.1, 0.6, 0.5, [])] == [True, False, True]
    assert [d.passed for d in eval_gates(0.1, 0.2, 0.5, ["x"])] == [True, True, False]


def test_first_failure_counts_outcomes() -> None:
    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "rlhf_learner_gate_outcomes_total", {"gate": "kl_budget", "outcome": outcome}
        )
        return value or 0.0

    fails, passes = count("fail"), count("pass")
    failed = first_failure(eval_gates(0.1, 0.9, 0.5, []))
    assert failed is not None and failed.gate == "kl_budget"
    assert (count("fail"), count("pass")) == (fails + 1, passes)


def test_reward_gain_threshold_is_configurable() -> None:
    assert not eval_gates(0.05, 0.1, 0.5, [], min_gain=0.1)[0].passed
    assert eval_gates(-0.5, 0.1, 0.5, [], min_gain=-1.0)[0].passed


@pytest.mark.parametrize(
    ("accuracy", "z", "outcome"),
    [
        (0.55, 1.65, "certified"),  # above the one-sided 95 % quantile, 1.645
        (0.55, 1.64, "uncertain"),
        (0.45, -1.64, "uncertain"),
        (0.45, -1.65, "contradicted"),  # below minus the same quantile
        (0.45, 2.0, "uncertain"),  # better than chance, below the accuracy floor: not worse
        (None, 3.0, "contradicted"),  # no accuracy reported: nothing vouches for it
    ],
)
def test_reward_model_classified_by_its_signed_rank_z(
    accuracy: float | None, z: float, outcome: str
) -> None:
    verdict = classify_reward_model(accuracy, 100, 0.5, 0.95, z)
    assert verdict.outcome == outcome
    assert (verdict.outcome == "certified") == reward_gate(accuracy, 100, 0.5, 0.95, z).passed


@pytest.mark.parametrize(
    ("hits", "outcome"),
    [
        (59, "certified"),
        (58, "uncertain"),
        (50, "uncertain"),
        (42, "uncertain"),
        (41, "contradicted"),
    ],
)
def test_reward_model_classified_by_the_wilson_bounds(hits: int, outcome: str) -> None:
    """No ranks reported: 59 of 100 is the fewest whose one-sided 95 % lower bound clears 0.5,
    and (the interval is symmetric) 41 the most whose upper bound stays below it."""
    verdict = classify_reward_model_on({"accuracy": hits / 100, "eval_count": 100.0}, 0.5, 0.95)
    assert verdict.outcome == outcome
    low = wilson_lower_bound(hits, 100, 0.95)
    high = 1 - wilson_lower_bound(100 - hits, 100, 0.95)
    assert (outcome == "certified") == (low > 0.5) and (outcome == "contradicted") == (high < 0.5)


def test_few_held_out_votes_leave_most_reward_models_uncertain() -> None:
    """The demo's first cycle holds out 13 votes: only 10 of 13 certifies, only 3 of 13
    contradicts, everything between is uncertain; nothing held out is no evidence at all."""
    outcomes = {k: classify_reward_model(k / 13, 13, 0.5).outcome for k in range(14)}
    assert [k for k, o in outcomes.items() if o == "uncertain"] == [4, 5, 6, 7, 8, 9]
    assert outcomes[10] == "certified" and outcomes[3] == "contradicted"
    assert classify_reward_model(0.6, 0, 0.5).outcome == "uncertain"


def test_without_the_test_the_threshold_alone_decides() -> None:
    assert classify_reward_model(0.5, 100, 0.5, confidence=0).outcome == "certified"
    assert classify_reward_model(0.49, 100, 0.5, confidence=0).outcome == "contradicted"


def test_verdict_reason_says_why_it_is_uncertain_or_contradicted() -> None:
    uncertain = classify_reward_model(0.55, 100, 0.5, 0.95, 1.0)
    assert "signed-rank z 1.00 <= 1.64" in uncertain.reason
    assert "not worse than chance either" in uncertain.reason
    contradicted = classify_reward_model_on({"accuracy": 0.3, "eval_count": 100.0}, 0.5, 0.95)
    assert "upper bound" in contradicted.reason and "worse than chance" in contradicted.reason


def test_reward_verdicts_are_counted_with_uncertain_apart() -> None:
    def count(outcome: str) -> float:
        labels = {"gate": "reward_accuracy", "outcome": outcome}
        return REGISTRY.get_sample_value("rlhf_learner_gate_outcomes_total", labels) or 0.0

    before = {o: count(o) for o in ("pass", "fail", "uncertain")}
    for z in (2.0, 0.0, 0.1, -2.0):
        count_reward_verdict("reward_accuracy", classify_reward_model(0.5, 100, 0.5, 0.95, z))
    after = {o: count(o) - before[o] for o in before}
    assert after == {"pass": 1.0, "fail": 1.0, "uncertain": 2.0}


@pytest.mark.parametrize(
    ("metrics", "leans"),
    [
        ({"accuracy": 0.4, "signed_rank_z": 0.1}, True),  # the ranks decide where reported
        ({"accuracy": 0.6, "signed_rank_z": 0.0}, False),
        ({"accuracy": 0.51}, True),  # else the accuracy against 0.5
        ({"accuracy": 0.5}, False),
        ({}, False),
    ],
)
def test_which_held_out_votes_lean_toward_the_model(metrics: dict[str, float], leans: bool) -> None:
    assert leans_toward(metrics) is leans
