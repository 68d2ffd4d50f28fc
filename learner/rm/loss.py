"""Pairwise (Bradley-Terry) ranking loss of a reward model and its batch statistics.

Equation (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155, eq. 1):

    loss = - 1 / sum(w) * sum_i w_i * log sigmoid(r(x_i, y_chosen_i) - r(x_i, y_rejected_i))

With all weights 1 this is exactly TRL's ``RewardTrainer.compute_loss`` (mean of
``-logsigmoid(chosen - rejected)``); the weights let a K-way ranking's C(K, 2) pairs count as one
comparison (the store sets them). Ties and both-bad votes never reach this loss: they carry no
ordering between the two answers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(
    rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted mean of -log sigmoid(r_c - r_r). Inputs (N,), returns a scalar."""
    per_pair = -F.logsigmoid(rewards_chosen - rewards_rejected)  # (N,)
    return (weights * per_pair).sum() / weights.sum().clamp(min=1e-12)


def pairwise_stats(
    rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor
) -> dict[str, float]:
    """Accuracy (chosen scored higher), mean margin and reward statistics. Inputs (N,)."""
    diff = rewards_chosen - rewards_rejected  # (N,)
    both = torch.cat([rewards_chosen, rewards_rejected])  # (2N,)
    return {
        "accuracy": (diff > 0).float().mean().item(),
        "margin": diff.mean().item(),
        "rewards/chosen": rewards_chosen.mean().item(),
        "rewards/rejected": rewards_rejected.mean().item(),
        "reward/mean": both.mean().item(),
        "reward/std": both.std(unbiased=False).item(),
        "reward/min": both.min().item(),
        "reward/max": both.max().item(),
    }
