"""Per-user reliability weights (learner.rm.reliability) and their use in reward training."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from learner.rm.config import RewardConfig
from learner.rm.reliability import ReliabilityTracker, reliability_weights
from learner.rm.train import train_reward_model
from tests.learner.ml.helpers import separable_comparisons

pytestmark = pytest.mark.unit


def test_a_random_voter_gets_the_floor_and_typical_users_about_one() -> None:
    agreements = {"good-1": (80.0, 100.0), "good-2": (78.0, 100.0), "random": (50.0, 100.0)}
    w = reliability_weights(agreements, floor=0.1, prior_votes=10.0)
    assert w["random"] == 0.1
    assert w["good-1"] == 1.0  # above the pooled agreement: capped at 1
    assert 0.8 < w["good-2"] <= 1.0


def test_few_votes_are_shrunk_towards_the_population() -> None:
    many = reliability_weights(
        {"a": (80.0, 100.0), "b": (80.0, 100.0), "new": (1.0, 4.0)}, 0.1, 10.0
    )
    # 1 of 4 agreeing alone would put "new" at the floor; shrinkage keeps it up.
    assert 0.3 < many["new"] < 1.0
    # The same rate over 100 votes is evidence: the floor.
    sure = reliability_weights(
        {"a": (80.0, 100.0), "b": (80.0, 100.0), "c": (25.0, 100.0)}, 0.1, 0.0
    )
    assert sure["c"] == 0.1


def test_users_who_differ_only_by_chance_keep_their_weight() -> None:
    """Most votes coin flips (a preference most pairs do not touch): 20 ordinary users of 20
    votes each agree 55 % of the time on average; chance alone spreads them from about 30 % to
    80 %. None of them is a random voter, so none may be pushed down far."""
    rng = random.Random(3)
    agreements = {
        f"user-{u}": (float(sum(rng.random() < 0.55 for _ in range(20))), 20.0) for u in range(20)
    }
    w = reliability_weights(agreements, floor=0.1, prior_votes=10.0)
    assert min(w.values()) > 0.6 and sum(w.values()) / len(w) > 0.9
    # With a fifth of them voting at random over 100 votes each, those are found.
    agreements = {
        f"user-{u}": (
            float(sum(rng.random() < (0.5 if u < 4 else 0.75) for _ in range(100))),
            100.0,
        )
        for u in range(20)
    }
    w = reliability_weights(agreements, floor=0.1, prior_votes=10.0)
    random_voters = [w[f"user-{u}"] for u in range(4)]
    assert sum(random_voters) / 4 < 0.4 and min(w[f"user-{u}"] for u in range(4, 20)) > 0.7


def test_a_reference_no_better_than_chance_weights_nobody_down() -> None:
    agreements = {"a": (51.0, 100.0), "b": (40.0, 100.0), "c": (60.0, 100.0)}
    assert set(reliability_weights(agreements, 0.1, 10.0).values()) == {1.0}
    assert reliability_weights({}, 0.1, 10.0) == {}


def test_a_reference_that_agrees_with_every_vote_weights_everybody_one() -> None:
    assert reliability_weights({"a": (10.0, 10.0), "b": (5.0, 5.0)}, 0.1, 10.0) == {
        "a": 1.0,
        "b": 1.0,
    }


def test_tracker_counts_sides_ties_and_anonymous_votes() -> None:
    tracker = ReliabilityTracker(floor=0.1, prior_votes=0.0)
    tracker.observe(
        ["u", "u", "u", "u", None],
        torch.tensor([1.0, -1.0, 0.0, 5.0, 1.0]),
        torch.tensor([1.0, 1.0, 1.0, 0.5, 1.0]),  # the fourth is a tie: no side
    )
    assert tracker.counts["u"] == [1.5, 3.0]  # agree, disagree, equal rewards = half
    assert "None" not in tracker.counts and None not in tracker.counts
    # A target of 0 (the "rejected" side won) flips what agreeing means.
    tracker.observe(["v"], torch.tensor([-2.0]), torch.tensor([0.0]))
    assert tracker.counts["v"] == [1.0, 1.0]
    assert tracker.batch_weights([None, "unseen"]).tolist() == [1.0, 1.0]


def test_training_down_weights_a_random_voter(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Three users vote the separable preference, one flips a coin half the time: the metrics
    show users down-weighted once the model beats chance; with the option off, no weighting."""
    rng = random.Random(0)
    comparisons = []
    for i, c in enumerate(separable_comparisons(96)):
        voter = f"user-{i % 4}"
        if voter == "user-3" and rng.random() < 0.5:
            c = replace(c, chosen=c.rejected, rejected=c.chosen)
        comparisons.append(replace(c, user_id=voter))
    config = RewardConfig(
        num_epochs=2, batch_size=8, learning_rate=5e-3, eval_fraction=0.0, reliability_warmup=0.5
    )
    result = train_reward_model(tiny_model_dir, comparisons, config, tmp_path / "out")
    m = result.metrics
    assert m["reliability/users"] == 4
    assert m["reliability/pooled_agreement"] > 0.55
    assert m["reliability/downweighted_users"] >= 1
    assert m["reliability/mean_weight"] < 1.0
    off = train_reward_model(
        tiny_model_dir,
        comparisons,
        replace(config, user_reliability=False),
        tmp_path / "off",
    )
    assert "reliability/users" not in off.metrics
