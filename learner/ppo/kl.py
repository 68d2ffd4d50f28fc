"""Per-token KL estimators and the KL-penalty coefficient controllers.

Estimators of KL(pi || pi_ref) from samples y ~ pi, per token, with log r = log pi_ref - log pi
(J. Schulman, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html):

    k1 = -log r                     unbiased, high variance, can be negative per token
    k3 = (r - 1) - log r            unbiased, lower variance, always >= 0

Adaptive coefficient (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, sec. 2.2):

    e_t = clip(KL_t / KL_target - 1, -0.2, 0.2);   beta_{t+1} = beta_t * (1 + K_beta * e_t)

with K_beta = n_steps / horizon (the number of samples this update saw over the horizon).
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator
) -> torch.Tensor:
    """Per-token KL estimate. Inputs (B, T) log-probs of the sampled tokens; returns (B, T)."""
    log_ratio = ref_logprobs - logprobs  # (B, T) log r
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, coef: float) -> None:
        self.value = coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """Ziegler et al. 2019 proportional controller steering the mean KL towards ``target``."""

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("adaptive KL needs target > 0 and horizon > 0")
        self.value = init_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update beta after a batch of ``n_steps`` samples whose mean KL was ``current_kl``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
