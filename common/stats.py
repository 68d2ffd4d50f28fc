"""Small statistics both services use: the Wilson score interval of a proportion, and an
anytime-valid confidence sequence for a mean in [0, 1] (sequential decisions)."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95 %


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)

    ``successes`` may be fractional (ties counted half).
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_confidence_sequence(
    total: float, n: int, alpha: float = 0.05, rho: float = 10.0
) -> tuple[float, float]:
    """Anytime-valid (1 - alpha) confidence sequence for the mean of observations in [0, 1].

    Robbins' normal-mixture boundary for sub-Gaussian sums (Howard, Ramdas, McAuliffe, Sekhon,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021,
    eq. (14)): with variance proxy V = n/4 (bounded in [0, 1]), the running mean stays within

        sqrt((V + rho) * (log((V + rho) / rho) + 2 log(2 / alpha))) / n

    of the true mean at *every* n simultaneously with probability >= 1 - alpha, so a decision
    may be taken the first time the interval excludes a value, however often it is checked.
    ``rho`` (in units of V) trades width early against width late: larger widens the first
    looks and narrows the later ones.
    """
    if n <= 0:
        return (0.0, 1.0)
    v = n / 4.0
    radius = math.sqrt((v + rho) * (math.log((v + rho) / rho) + 2 * math.log(2 / alpha))) / n
    mean = total / n
    return (max(0.0, mean - radius), min(1.0, mean + radius))
