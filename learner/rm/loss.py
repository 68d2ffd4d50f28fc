"""Reward-model losses: pairwise (Bradley-Terry) with soft targets, and pointwise ratings.

Pairwise (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155, eq. 1), with the
target t_i = P(chosen better) as a soft label (t = 0.5 for a tie, as the Bradley-Terry model
with ties reduced to its equal-strength case; Rao & Kupper 1967):

    d_i  = r(x_i, y_chosen_i) - r(x_i, y_rejected_i)
    loss = - 1 / sum(w) * sum_i w_i * (t_i log sigmoid(d_i) + (1 - t_i) log sigmoid(-d_i))

With all targets 1 and weights 1 this is exactly TRL's ``RewardTrainer.compute_loss`` (mean of
``-logsigmoid(chosen - rejected)``); the weights let a K-way ranking's C(K, 2) pairs count as one
comparison (the store sets them). A tie's loss is smallest at d = 0: it pulls the two rewards
together instead of being thrown away.

Ratings (thumbs up/down, and both answers of a "both bad" vote as down) are absolute: a
logistic model of P(up) = sigmoid(r(x, y) - tau) with a learned threshold tau, trained by
binary cross-entropy. It shares the reward scale with the pairwise loss, so a thumbs-down answer
is pushed below the answers users accept (the pointwise-plus-pairwise form of e.g. Wang et al.
2024, "HelpSteer2-Preference", https://arxiv.org/abs/2410.01257).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    weights: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted soft-label Bradley-Terry loss (module doc). Inputs (N,), returns a scalar."""
    diff = rewards_chosen - rewards_rejected  # (N,)
    if targets is None:
        per_pair = -F.logsigmoid(diff)  # (N,)
    else:
        per_pair = -(targets * F.logsigmoid(diff) + (1 - targets) * F.logsigmoid(-diff))
    return (weights * per_pair).sum() / weights.sum().clamp(min=1e-12)


def rating_loss(
    rewards: torch.Tensor, good: torch.Tensor, threshold: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted BCE of P(up) = sigmoid(r - tau). rewards, good (0/1), weights (N,); tau ()."""
    per_item = F.binary_cross_entropy_with_logits(
        rewards - threshold, good.float(), reduction="none"
    )  # (N,)
    return (weights * per_item).sum() / weights.sum().clamp(min=1e-12)


def signed_rank_z(diff: torch.Tensor) -> float:
    """Wilcoxon signed-rank statistic of margins d_i = r(chosen) - r(rejected), standardised
    (Wilcoxon 1945, "Individual comparisons by ranking methods"; normal approximation with the
    tie correction): about N(0, 1) when the model orders the votes no better than chance (the
    margins are then symmetric about 0), large when it orders them well. Zero margins are left
    out. Input (N,).

    Why not the share of positive margins (accuracy): a vote on two answers the users value
    equally is a coin flip that no model can predict, and accuracy counts each such vote as
    much as an informative one. The ranks weigh each vote by how sure the model is: where it
    scores two answers alike (small |d|) the vote barely counts, so a preference that leaves
    most pairs equal (a tone most answers lack) is detected with fewer votes.
    """
    d = diff[diff != 0].double()
    n = d.numel()
    if n == 0:
        return 0.0
    magnitudes = d.abs()
    _, inverse, counts = torch.unique(magnitudes, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # average rank of each tie group
    w_plus = ranks[d > 0].sum().item()
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - float((counts.double() ** 3 - counts).sum()) / 48
    return (w_plus - mean) / var**0.5 if var > 0 else 0.0


def pairwise_stats(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> dict[str, float]:
    """Accuracy (chosen scored higher, over decisive votes: ties have no order), mean margin and
    reward statistics. Inputs (N,)."""
    diff = rewards_chosen - rewards_rejected  # (N,)
    both = torch.cat([rewards_chosen, rewards_rejected])  # (2N,)
    decisive = diff if targets is None else diff[targets != 0.5]
    return {
        "accuracy": (decisive > 0).float().mean().item() if decisive.numel() else float("nan"),
        "margin": decisive.mean().item() if decisive.numel() else float("nan"),
        "signed_rank_z": signed_rank_z(decisive),
        "rewards/chosen": rewards_chosen.mean().item(),
        "rewards/rejected": rewards_rejected.mean().item(),
        "reward/mean": both.mean().item(),
        "reward/std": both.std(unbiased=False).item(),
        "reward/min": both.min().item(),
        "reward/max": both.max().item(),
    }
