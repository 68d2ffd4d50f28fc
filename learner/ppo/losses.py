"""PPO losses: clipped policy surrogate, clipped value loss, entropy.

Policy (Schulman et al. 2017, https://arxiv.org/abs/1707.06347, eq. 7), per token:

    ratio_t = exp(log pi_theta(a_t) - log pi_old(a_t))
    L_pg    = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

Value (clipped around the rollout values, as OpenAI baselines / TRL / OpenRLHF):

    V_clip  = V_old + clip(V - V_old, -eps_v, eps_v)
    L_v     = 0.5 * mean_t max((V - R)^2, (V_clip - R)^2)

Means are over response tokens (mask = 1). Every function takes (B, T) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learner.ppo.advantages import masked_mean


@dataclass
class PolicyLossOut:
    loss: torch.Tensor  # scalar
    clipfrac: torch.Tensor  # scalar: share of tokens where the clipped branch was active
    approxkl: torch.Tensor  # scalar: 0.5 * mean (log ratio)^2 (old -> new policy)
    ratio: torch.Tensor  # scalar: mean ratio


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> PolicyLossOut:
    """Clipped surrogate. logprobs/old_logprobs/advantages/mask (B, T) -> scalars."""
    log_ratio = (logprobs - old_logprobs) * mask  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)  # (B, T)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approxkl = 0.5 * masked_mean(log_ratio**2, mask)
        mean_ratio = masked_mean(ratio, mask)
    return PolicyLossOut(loss, clipfrac, approxkl, mean_ratio)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss and its clip fraction. Inputs (B, T) -> (scalar, scalar)."""
    clipped_values = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )  # (B, T)
    loss_unclipped = (values - returns) ** 2  # (B, T)
    loss_clipped = (clipped_values - returns) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.max(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dim. (B, T, V) -> (B, T).

    H = logsumexp(z) - sum softmax(z) * z, which avoids log(0) for tiny probabilities.
    In float32 whatever the logits' dtype.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)  # (B, T, V)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[tokens], in float32 whatever the logits' dtype (a bfloat16
    log-prob keeps 8 bits: a ratio of two would be off by up to 1 %). logits (B, T, V), tokens
    (B, T) -> (B, T)."""
    logits = logits.float()
    logsumexp = torch.logsumexp(logits, dim=-1)  # (B, T)
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - logsumexp
