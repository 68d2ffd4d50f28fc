"""Gate decisions are pure functions of the metrics and the settings' thresholds."""

from __future__ import annotations

import math
import random

import torch
from prometheus_client import REGISTRY

from learner.gates import (
    eval_gates,
    first_failure,
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
