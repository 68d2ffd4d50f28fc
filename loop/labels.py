"""How good can a reward model trained on noisy votes be, and how good is it: against the truth.

The simulated users know their noise-free utilities, so two numbers are measurable that a real
deployment can only estimate:

- the **label ceiling**: the expected agreement of one noisy Bradley-Terry vote with the
  noise-free ordering of the same pair, ``E[sigmoid(|u_a - u_b| / T)]`` over the pairs whose
  utilities differ. It says how much signal one vote carries: 0.5 is none, 1.0 is a clean label.
  Pairs of equal utility have no noise-free ordering and are left out of both numbers.
- the **truth accuracy** of a scorer (a reward model): the share of pairs with different
  utilities that it orders as the utilities do (equal scores count half). A reward model fitted
  to many noisy votes can beat the label ceiling, because the noise averages out.

Bradley & Terry 1952; the noise model of :mod:`loop.preferences`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.stats import wilson_interval
from loop.preferences import sigmoid


@dataclass(frozen=True)
class Agreement:
    """A proportion over ``n`` pairs with its 95 % Wilson interval."""

    value: float
    n: int
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def _ordered(utility_pairs: Sequence[tuple[float, float]], tol: float) -> list[int]:
    return [i for i, (ua, ub) in enumerate(utility_pairs) if abs(ua - ub) > tol]


def expected_agreement(
    utilities: tuple[float, float], temperature: float, tol: float = 1e-9
) -> float:
    """Chance that one noisy vote on this pair sides with its noise-free ordering: 0.5 when the
    utilities are equal (no ordering to agree with), 1.0 for noise-free votes."""
    gap = abs(utilities[0] - utilities[1])
    if gap <= tol:
        return 0.5
    return 1.0 if temperature == 0 else sigmoid(gap / temperature)


def label_ceiling(
    utility_pairs: Sequence[tuple[float, float]], temperature: float, tol: float = 1e-9
) -> Agreement:
    """Expected agreement of one noisy vote with the noise-free ordering (see module doc)."""
    rows = _ordered(utility_pairs, tol)
    probs = [expected_agreement(utility_pairs[i], temperature, tol) for i in rows]
    value = sum(probs) / len(probs) if probs else float("nan")
    low, high = wilson_interval(sum(probs), len(probs))
    return Agreement(value, len(probs), low, high)


def truth_accuracy(
    score_pairs: Sequence[tuple[float, float]],
    utility_pairs: Sequence[tuple[float, float]],
    tol: float = 1e-9,
) -> Agreement:
    """Share of pairs with different utilities that the scores order the same way."""
    if len(score_pairs) != len(utility_pairs):
        raise ValueError("one score pair per utility pair")
    rows = _ordered(utility_pairs, tol)
    hits = 0.0
    for i in rows:
        (sa, sb), (ua, ub) = score_pairs[i], utility_pairs[i]
        hits += 0.5 if sa == sb else float((sa > sb) == (ua > ub))
    value = hits / len(rows) if rows else float("nan")
    low, high = wilson_interval(hits, len(rows))
    return Agreement(value, len(rows), low, high)


def vote_agreement(
    votes: Sequence[tuple[tuple[float, float], int | None]], tol: float = 1e-9
) -> Agreement:
    """Share of actual votes (utilities, index voted best) that agree with the noise-free
    ordering, over pairs whose utilities differ; a tie or "both bad" vote counts half."""
    hits, n = 0.0, 0
    for (ua, ub), best in votes:
        if abs(ua - ub) <= tol:
            continue
        n += 1
        hits += 0.5 if best is None else float((best == 0) == (ua > ub))
    value = hits / n if n else float("nan")
    low, high = wilson_interval(hits, n)
    return Agreement(value, n, low, high)
