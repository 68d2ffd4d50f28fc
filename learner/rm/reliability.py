"""Per-user reliability: weight each user's comparisons by how often they agree with the rest.

Users disagree and some click at random. A user who votes with accuracy p (probability of
siding with the population's ordering) is worth log(p / (1 - p)) in an optimal weighted vote
(Nitzan & Paroush 1982, "Optimal decision rules in uncertain dichotomous choice situations";
the weighting that the Dawid & Skene 1979 model of annotators, "Maximum likelihood estimation of
observer error-rates using the EM algorithm", implies): a random voter (p = 0.5) is worth 0.

The reference ordering is the reward model being trained, read *prequentially* (Dawid 1984):
during the first epoch every comparison is scored by the forward pass that is about to train on
it, so the prediction has not seen that vote. The agreement of a user's votes with those
predictions estimates p up to the reward model's own error, which is the same for every user,
so users are compared with the pooled agreement p0 of everybody:

    p_u = p0 + B_u * (agree_u / n_u - p0)          (shrunk towards p0)
    w_u = clip(logit(p_u) / logit(p0), floor, 1)

The shrinkage is empirical Bayes (Efron & Morris 1975, "Data analysis using Stein's estimator
and its generalizations", JASA 70): B_u = tau^2 / (tau^2 + p0 (1 - p0) / n_u), where tau^2, the
variance of the users' true agreements, is estimated by the method of moments from how much
more the users' observed agreements spread than binomial noise alone would make them spread,
and B_u is at most n_u / (n_u + m) (``prior_votes`` m: a few votes say little whatever the
spread). When everybody votes alike, the spread is binomial noise, tau^2 is about 0 and so is
every weight's change: this matters where most votes are coin flips (pairs the users value
equally) and p0 is barely above 0.5, where a fixed prior let chance streaks of 20 votes put a
quarter of ordinary users at the floor.

A typical user gets about 1, a random voter the floor; nobody is weighted above 1, so a lucky
streak cannot make one user dominate. While the reference is no better than chance (p0 <= 0.5,
e.g. the first steps from a zero-initialised head) every weight stays 1. Ties and predictions of
exactly equal reward count as half an agreement.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch

# The pooled agreement must beat chance by this much before anybody is down-weighted: below it
# the logit ratio divides by almost zero.
MIN_POOLED_EDGE = 0.02


def reliability_weights(
    agreements: Mapping[str, tuple[float, float]], floor: float, prior_votes: float
) -> dict[str, float]:
    """``{user: (agreements, votes)}`` -> ``{user: weight in [floor, 1]}`` (module doc)."""
    total_agree = sum(a for a, _ in agreements.values())
    total_votes = sum(n for _, n in agreements.values())
    if total_votes <= 0:
        return {user: 1.0 for user in agreements}
    pooled = total_agree / total_votes
    if pooled <= 0.5 + MIN_POOLED_EDGE:
        return {user: 1.0 for user in agreements}
    pooled_logit = _logit(pooled)
    spread = between_user_variance(agreements, pooled)
    binomial = pooled * (1 - pooled)
    weights = {}
    for user, (agree, votes) in agreements.items():
        if votes <= 0:
            weights[user] = 1.0
            continue
        # No spread beyond noise (also when everybody agreed with every vote: no binomial
        # noise either): nothing tells the users apart, so each keeps the pooled agreement.
        evidence = spread / (spread + binomial / votes) if spread > 0 else 0.0
        shrink = min(evidence, votes / (votes + prior_votes))
        p = pooled + shrink * (agree / votes - pooled)
        weights[user] = min(1.0, max(floor, _logit(max(p, 0.5)) / pooled_logit))
    return weights


def between_user_variance(agreements: Mapping[str, tuple[float, float]], pooled: float) -> float:
    """Method-of-moments estimate of the variance of the users' true agreement rates (0 when
    their observed rates spread no more than binomial noise around ``pooled`` would make them):
    E[sum_u n_u (p_u - p0)^2] = (U - 1) p0 (1 - p0) + tau^2 (N - sum_u n_u^2 / N)."""
    rows = [(a, n) for a, n in agreements.values() if n > 0]
    total = sum(n for _, n in rows)
    if len(rows) < 2 or total <= 0:
        return 0.0
    observed = sum(n * (a / n - pooled) ** 2 for a, n in rows)
    expected_noise = (len(rows) - 1) * pooled * (1 - pooled)
    scale = total - sum(n * n for _, n in rows) / total
    return max(0.0, (observed - expected_noise) / scale) if scale > 0 else 0.0


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class ReliabilityTracker:
    """Prequential agreement counts per user, and the weights they imply (module doc)."""

    def __init__(self, floor: float, prior_votes: float) -> None:
        self.floor = floor
        self.prior_votes = prior_votes
        self.counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def observe(
        self, users: Sequence[str | None], margins: torch.Tensor, targets: torch.Tensor
    ) -> None:
        """Record predictions made *before* training on these votes. ``margins`` = reward of
        the chosen minus the rejected answer, ``targets`` the votes' soft labels; (N,) each."""
        for user, margin, target in zip(users, margins.tolist(), targets.tolist(), strict=True):
            if user is None or target == 0.5:
                continue  # anonymous, or a tie: no side to agree with
            sided = margin * (2 * target - 1)
            row = self.counts[user]
            row[0] += 1.0 if sided > 0 else 0.5 if sided == 0 else 0.0
            row[1] += 1.0

    def weights(self) -> dict[str, float]:
        return reliability_weights(
            {u: (a, n) for u, (a, n) in self.counts.items()}, self.floor, self.prior_votes
        )

    def batch_weights(self, users: Sequence[str | None]) -> torch.Tensor:
        """Per-row multipliers for a batch (1 for anonymous or not yet seen users)."""
        table = self.weights()
        return torch.tensor([table.get(u, 1.0) if u else 1.0 for u in users], dtype=torch.float32)

    def summary(self) -> dict[str, float]:
        """For the reward model's metrics: users seen, how many are down-weighted, pooled
        agreement, mean weight."""
        table = self.weights()
        weights = list(table.values())
        votes = sum(n for _, n in self.counts.values())
        agree = sum(a for a, _ in self.counts.values())
        return {
            "reliability/users": float(len(table)),
            "reliability/downweighted_users": float(sum(w < 0.999 for w in table.values())),
            "reliability/at_floor_users": float(sum(w <= self.floor + 1e-9 for w in weights)),
            "reliability/pooled_agreement": agree / votes if votes else float("nan"),
            "reliability/mean_weight": sum(table.values()) / len(table) if table else 1.0,
        }


class PrequentialWeights:
    """The training loop's side: agreement is observed in the first epoch only (each vote
    scored by the forward pass about to train on it), and the weights apply once a share
    ``warmup`` of the first epoch's steps has passed (the model must beat chance first)."""

    def __init__(
        self, floor: float, prior_votes: float, warmup: float, steps_per_epoch: int
    ) -> None:
        self.tracker = ReliabilityTracker(floor, prior_votes)
        self.warmup_steps = math.ceil(warmup * steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        self.step = 0

    def before_step(
        self, users: Sequence[str | None], margins: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Per-row weights for this step's comparisons; records their agreement first time."""
        weights = (
            self.tracker.batch_weights(users).to(margins.device)
            if self.step >= self.warmup_steps
            else torch.ones(len(users), device=margins.device)
        )
        if self.step < self.steps_per_epoch:
            self.tracker.observe(users, margins, targets)
        self.step += 1
        return weights
