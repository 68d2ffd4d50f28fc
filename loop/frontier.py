"""What win rate against the base can a policy reach, given how good its reward model is?

The acceptance asks a policy trained from votes to win 70 % of blind comparisons against the
base model. Two things bound that from the base model's own answers, before any training:

- **Best-of-n with the true utility** (the oracle): pick the best of n base answers to a prompt.
  Its KL to the base is at most ``log n - (n - 1) / n`` nats (Stiennon et al. 2020, "Learning
  to summarize from human feedback", app. G; Beirami et al. 2024, "Theoretical guarantees on
  the best-of-n alignment policy"), and it is the standard yardstick for how far a KL budget
  lets a policy move (Gao et al. 2023, "Scaling laws for reward model overoptimization").
  Where the base rarely says what the users like, even the oracle needs a large n.
- **Best-of-n with an imperfect reward model**: the same selection by ``u + sigma * z`` (z
  standard normal, independent per answer), with sigma set so that the scorer orders pairs of
  different utility as often as a reward model of a given *accuracy against the truth* does.
  Independent errors are the optimistic case: a real reward model's errors are correlated with
  features of the answers, which a policy can exploit.

The win rate counts a tie as half a win, as :mod:`loop.eval` does, and averages over prompts
with equal weight (each prompt's answers are an empirical sample of the base policy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def best_of_n_kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base) in nats: ``log n - (n - 1) / n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def oracle_win_rate(utilities: Sequence[float], n: int) -> float:
    """Exact win rate (ties = 1/2) of the best of n draws (with replacement) from ``utilities``
    against one more independent draw: the oracle best-of-n policy on one prompt."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    u = np.sort(np.asarray(utilities, dtype=float))
    m = len(u)
    values = np.unique(u)
    at_most = np.searchsorted(u, values, side="right") / m
    below = np.searchsorted(u, values, side="left") / m
    p_best = at_most**n - below**n  # P(max of n draws == value)
    return float(np.sum(p_best * (below + 0.5 * (at_most - below))))


def _informative_gaps(groups: Sequence[Sequence[float]], tol: float = 1e-9) -> np.ndarray:
    """|u_i - u_j| over the pairs of different utility within each prompt's answers."""
    gaps: list[np.ndarray] = []
    for utilities in groups:
        u = np.asarray(utilities, dtype=float)
        d = np.abs(u[:, None] - u[None, :])[np.triu_indices(len(u), k=1)]
        gaps.append(d[d > tol])
    return np.concatenate(gaps) if gaps else np.zeros(0)


def _nonempty_gaps(groups: Sequence[Sequence[float]]) -> np.ndarray:
    gaps = _informative_gaps(groups)
    if gaps.size == 0:
        raise ValueError("no pair of answers differs in utility")
    return gaps


def _accuracy_of_gaps(gaps: np.ndarray, sigma: float) -> float:
    if sigma <= 0:
        return 1.0
    z = gaps / (sigma * math.sqrt(2.0))
    return float(np.mean([0.5 * math.erfc(-x / math.sqrt(2.0)) for x in z]))


def truth_accuracy_of_noise(groups: Sequence[Sequence[float]], sigma: float) -> float:
    """Expected accuracy against the truth of the scorer ``u + sigma * z`` over the pairs of
    different utility: P(sign of the score gap is right) = Phi(|du| / (sigma * sqrt 2))."""
    return _accuracy_of_gaps(_nonempty_gaps(groups), sigma)


def noise_for_accuracy(groups: Sequence[Sequence[float]], accuracy: float) -> float:
    """The sigma whose scorer reaches ``accuracy`` against the truth (bisection; accuracy falls
    from 1 at sigma = 0 to 1/2 as sigma grows)."""
    if not 0.5 < accuracy <= 1.0:
        raise ValueError(f"accuracy must be in (0.5, 1], got {accuracy}")
    if accuracy >= 1.0:
        return 0.0
    gaps = _nonempty_gaps(groups)  # once: the bisection only changes sigma
    low, high = 0.0, 1.0
    while _accuracy_of_gaps(gaps, high) > accuracy:
        high *= 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if _accuracy_of_gaps(gaps, mid) > accuracy:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def noisy_best_of_n_win_rate(
    utilities: Sequence[float], n: int, sigma: float, trials: int, rng: np.random.Generator
) -> float:
    """Monte Carlo win rate (ties = 1/2) of best-of-n chosen by ``u + sigma * z`` against one
    random draw, on one prompt. Each trial draws a fresh scorer (one z per distinct answer, so
    an answer drawn twice scores the same), n answers with replacement and an opponent."""
    if n < 1 or trials < 1:
        raise ValueError("n and trials must be >= 1")
    u = np.asarray(utilities, dtype=float)
    m = len(u)
    scores = u[None, :] + sigma * rng.standard_normal((trials, m))
    picks = rng.integers(0, m, size=(trials, n))
    chosen = picks[np.arange(trials), np.argmax(np.take_along_axis(scores, picks, 1), axis=1)]
    opponent = rng.integers(0, m, size=trials)
    mine, theirs = u[chosen], u[opponent]
    return float(np.mean((mine > theirs) + 0.5 * (mine == theirs)))


def frontier(
    groups: Sequence[Sequence[float]],
    ns: Sequence[int],
    accuracy: float | None,
    trials: int = 2000,
    seed: int = 0,
) -> list[float]:
    """Win rate against the base of best-of-n for each n in ``ns``, by a scorer of the given
    truth accuracy (None: the oracle), averaged over prompts with equal weight. The scorer's
    noise is calibrated once; each n draws from its own generator seeded with ``seed``."""
    if accuracy is None:
        return [float(np.mean([oracle_win_rate(g, n) for g in groups])) for n in ns]
    sigma = noise_for_accuracy(groups, accuracy)
    rates = []
    for n in ns:
        rng = np.random.default_rng(seed)
        rates.append(
            float(np.mean([noisy_best_of_n_win_rate(g, n, sigma, trials, rng) for g in groups]))
        )
    return rates
