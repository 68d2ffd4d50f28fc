"""Reward-model loss and statistics against TRL's RewardTrainer maths and a hand computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from learner.rm.loss import pairwise_loss, pairwise_stats, rating_loss, signed_rank_z

CHOSEN = torch.tensor([1.0, -0.5, 2.0, 0.3])
REJECTED = torch.tensor([0.0, 0.5, -1.0, 0.3])


def test_loss_matches_hand_computation() -> None:
    diffs = [1.0, -1.0, 3.0, 0.0]
    expected = sum(math.log(1 + math.exp(-d)) for d in diffs) / 4
    loss = pairwise_loss(CHOSEN, REJECTED, torch.ones(4))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_weights_make_a_weighted_mean() -> None:
    weights = torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3])  # one pair + a 3-way ranking's 3 pairs
    per_pair = [math.log(1 + math.exp(-d)) for d in [1.0, -1.0, 3.0, 0.0]]
    expected = sum(w * p for w, p in zip(weights.tolist(), per_pair, strict=True)) / 2.0
    assert pairwise_loss(CHOSEN, REJECTED, weights).item() == pytest.approx(expected, rel=1e-6)


def test_targets_of_one_equal_the_plain_loss_and_a_tie_pulls_rewards_together() -> None:
    ones = torch.ones(4)
    torch.testing.assert_close(
        pairwise_loss(CHOSEN, REJECTED, ones, ones), pairwise_loss(CHOSEN, REJECTED, ones)
    )
    # t = 0.5: -(0.5 log s(d) + 0.5 log s(-d)), smallest at d = 0, symmetric in d.
    d = torch.tensor([1.0, -1.0, 0.0], requires_grad=True)
    half = torch.full((3,), 0.5)
    per_pair = [
        -(0.5 * math.log(1 / (1 + math.exp(-x))) + 0.5 * math.log(1 / (1 + math.exp(x))))
        for x in (1.0, -1.0, 0.0)
    ]
    loss = pairwise_loss(d, torch.zeros(3), torch.ones(3), half)
    assert loss.item() == pytest.approx(sum(per_pair) / 3, rel=1e-6)
    loss.backward()
    assert d.grad is not None
    assert d.grad[0] > 0 and d.grad[1] < 0 and d.grad[2] == 0  # pushes |d| towards 0


def test_rating_loss_by_hand() -> None:
    rewards, good = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    tau = torch.tensor(0.5)
    # BCE(sigmoid(1.5), 1) = log(1 + e^-1.5); BCE(sigmoid(-1.5), 0) = log(1 + e^-1.5)
    expected = math.log(1 + math.exp(-1.5))
    assert rating_loss(rewards, good, tau, torch.ones(2)).item() == pytest.approx(expected)
    weighted = rating_loss(rewards, torch.tensor([0.0, 0.0]), tau, torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(math.log(1 + math.exp(1.5)))


def test_stats_skip_ties_in_accuracy() -> None:
    stats = pairwise_stats(CHOSEN, REJECTED, torch.tensor([1.0, 1.0, 0.5, 0.5]))
    assert stats["accuracy"] == pytest.approx(0.5)  # 1.0 > 0 yes, -0.5 > 0.5 no
    assert stats["margin"] == pytest.approx(0.0)


def test_signed_rank_z_matches_the_wilcoxon_normal_approximation() -> None:
    # scipy 1.17: wilcoxon(d, zero_method="wilcox", correction=False, method="approx").zstatistic
    # (tied magnitudes 0.7/-0.7 and 0.3/0.3, one zero dropped)
    d = torch.tensor([0.5, -0.2, 1.3, 0.0, 0.7, -0.7, 2.0, 0.3, 0.3, -1.1])
    assert signed_rank_z(d) == pytest.approx(1.0681034923744679, rel=1e-9)
    assert signed_rank_z(-d) == pytest.approx(-1.0681034923744679, rel=1e-9)
    assert signed_rank_z(torch.zeros(3)) == 0.0 and signed_rank_z(torch.tensor([])) == 0.0


def test_signed_rank_z_is_standard_normal_for_a_chance_model_and_weighs_sure_votes() -> None:
    gen = torch.Generator().manual_seed(0)
    chance = torch.tensor([signed_rank_z(torch.randn(100, generator=gen)) for _ in range(2000)])
    assert abs(chance.mean().item()) < 0.07 and abs(chance.std().item() - 1) < 0.07
    assert (chance > 1.645).float().mean().item() == pytest.approx(0.05, abs=0.015)
    # 60 right, 40 wrong: the same accuracy, but wrong only where the model was unsure
    sure_right = torch.cat([torch.full((60,), 2.0), torch.full((40,), -0.1)])
    sure_wrong = torch.cat([torch.full((60,), 0.1), torch.full((40,), -2.0)])
    assert signed_rank_z(sure_right) > 3 > 0 > signed_rank_z(sure_wrong)
    assert pairwise_stats(sure_right, torch.zeros(100))["signed_rank_z"] == signed_rank_z(
        sure_right
    )


def test_stats_match_hand_computation() -> None:
    stats = pairwise_stats(CHOSEN, REJECTED)
    assert stats["accuracy"] == pytest.approx(0.5)  # the 0.3 vs 0.3 tie is not a win
    assert stats["margin"] == pytest.approx(0.75)
    assert stats["rewards/chosen"] == pytest.approx(0.7)
    assert stats["rewards/rejected"] == pytest.approx(-0.05)
    both = torch.cat([CHOSEN, REJECTED])
    assert stats["reward/mean"] == pytest.approx(both.mean().item())
    assert stats["reward/std"] == pytest.approx(both.std(unbiased=False).item())


def test_matches_trl_reward_trainer_compute_loss() -> None:
    """Run TRL 1.16's own ``RewardTrainer.compute_loss`` on the same rewards."""
    pytest.importorskip("trl", reason="trl==1.16.0 is the numeric reference (pip install)")
    from accelerate import Accelerator
    from trl.trainer.reward_trainer import RewardTrainer

    rewards = torch.cat([CHOSEN, REJECTED]).unsqueeze(-1)  # TRL: chosen rows then rejected
    model = SimpleNamespace(training=False)

    def fake_model(**_: object) -> SimpleNamespace:
        return SimpleNamespace(logits=rewards)

    trainer = SimpleNamespace(
        model=model,
        args=SimpleNamespace(center_rewards_coefficient=None),
        accelerator=Accelerator(cpu=True),
        _metrics={
            "eval": {
                k: [] for k in ("min_reward", "mean_reward", "max_reward", "accuracy", "margin")
            }
        },
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {"attention_mask": torch.ones(8, 3)}
    trl_loss = RewardTrainer.compute_loss(trainer, fake_model, inputs)
    ours = pairwise_loss(CHOSEN, REJECTED, torch.ones(4))
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6)
    stats = pairwise_stats(CHOSEN, REJECTED)
    assert stats["accuracy"] == pytest.approx(trainer._metrics["eval"]["accuracy"][0])
    assert stats["margin"] == pytest.approx(trainer._metrics["eval"]["margin"][0])
    assert stats["reward/mean"] == pytest.approx(trainer._metrics["eval"]["mean_reward"][0])
