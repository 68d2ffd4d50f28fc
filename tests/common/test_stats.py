"""common.stats: the confidence sequence is valid at every look, and tightens with data."""

from __future__ import annotations

import numpy as np

from common.stats import mean_confidence_sequence


def _ever_excludes(p: float, truth: float, runs: int, looks: int, alpha: float) -> float:
    """Share of simulated runs whose interval excluded ``truth`` at *any* of ``looks`` looks."""
    rng = np.random.default_rng(7)
    wins = np.cumsum(rng.random((runs, looks)) < p, axis=1)
    excluded = np.zeros(runs, dtype=bool)
    for n in range(1, looks + 1):
        for run in np.flatnonzero(~excluded):
            low, high = mean_confidence_sequence(float(wins[run, n - 1]), n, alpha)
            excluded[run] |= not (low <= truth <= high)
    return float(excluded.mean())


def test_checking_after_every_vote_keeps_the_error_rate() -> None:
    # A fair coin, checked after each of 1,000 votes: a fixed-sample 95 % interval peeked at
    # this often would exclude 0.5 in most runs; the sequence does in at most alpha of them.
    assert _ever_excludes(0.5, 0.5, runs=200, looks=1000, alpha=0.05) <= 0.05


def test_a_clear_preference_is_detected() -> None:
    # 70 % wins: the interval leaves 0.5 behind within a few hundred votes in almost every run.
    assert _ever_excludes(0.7, 0.5, runs=100, looks=300, alpha=0.05) >= 0.95


def test_interval_shrinks_and_stays_in_bounds() -> None:
    widths = []
    for n in (10, 100, 1000):
        low, high = mean_confidence_sequence(0.6 * n, n)
        assert 0.0 <= low < 0.6 < high <= 1.0
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert mean_confidence_sequence(0, 0) == (0.0, 1.0)
