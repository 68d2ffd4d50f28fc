"""Per-token rewards, generalised advantage estimation and masked whitening.

GAE (Schulman et al. 2016, https://arxiv.org/abs/1506.02438, eq. 16):

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = sum_l (gamma * lambda)^l * delta_{t+l}   (computed backwards: A_t = delta_t +
                                                        gamma * lambda * A_{t+1})
    R_t     = A_t + V(s_t)                             (value targets)

The response ends at its last unmasked token (EOS, or the length limit): V after it is 0.
RLOO (REINFORCE leave-one-out; Kool et al. 2019, https://openreview.net/forum?id=r1lgTGL5DE;
Ahmadian et al. 2024, "Back to Basics", https://arxiv.org/abs/2402.14740, eq. 6): with k samples
of one prompt, each sample's baseline is the mean sequence reward of the other k - 1:

    A_i = R_i - 1 / (k - 1) * sum_{j != i} R_j

an unbiased per-prompt baseline that needs no critic.

Whitening (Huang et al. 2024, "N+ implementation details", https://arxiv.org/abs/2403.17031):
(x - mean) / sqrt(var + 1e-8) over unmasked entries, with the unbiased (Bessel) variance, the same
maths as TRL's ``masked_whiten``.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over entries where ``mask`` is 1. Inputs same shape; returns a scalar."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over unmasked entries (n / (n - 1) Bessel correction)."""
    n = mask.sum()
    centred = values - masked_mean(values, mask)
    var = masked_mean(centred**2, mask)
    return var * n / (n - 1).clamp(min=1)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """Whiten unmasked entries to mean 0 (or keep the mean if not shift_mean), variance 1."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + 1e-8)
    return whitened if shift_mean else whitened + mean


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """r_t = -beta * KL_t, plus the sequence score on each response's last real token.

    scores (B,), kl (B, T), mask (B, T) -> rewards (B, T), zero on masked tokens.
    Plain loop it equals: for b: r[b] = -beta * kl[b] * mask[b]; r[b, last[b]] += scores[b].
    """
    rewards = -kl_coef * kl * mask  # (B, T)
    last = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)  # (B,)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] += scores
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, (B, T) each, from rewards, values and mask (B, T).

    Masked positions (after the response's end) have value 0 and do not bootstrap; their
    advantages are 0. Loop over time only: T is short (new tokens) and B is vectorised.
    """
    values = values * mask  # (B, T)
    rewards = rewards * mask
    last_gae = torch.zeros_like(values[:, 0])  # (B,)
    reversed_adv = []
    n_steps = rewards.shape[1]
    for t in reversed(range(n_steps)):
        next_value = values[:, t + 1] if t + 1 < n_steps else torch.zeros_like(last_gae)  # (B,)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        last_gae = (delta + gamma * lam * last_gae) * mask[:, t]
        reversed_adv.append(last_gae)
    advantages = torch.stack(reversed_adv[::-1], dim=1)  # (B, T)
    returns = advantages + values
    return advantages, returns


def sequence_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """R = score - beta * sum_t KL_t, one per response. scores (B,), kl/mask (B, T) -> (B,)."""
    return scores - kl_coef * (kl * mask).sum(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages (see module doc). rewards (B,), B = prompts * k -> (B,).

    Rows are grouped by prompt, contiguous: [p0 s0, p0 s1, ..., p1 s0, ...].
    Plain loop it equals: for each group g: A[g_i] = R[g_i] - mean(R[g_j] for j != i).
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)  # (P, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)  # (P, k)
    return (grouped - baseline).reshape(-1)  # (B,)
