"""Win-rate statistics: Wilson intervals against hand-computed values, tie counting."""

from __future__ import annotations

import random

import pytest

from loop.eval import EvalReport, SideStats, _record, render_markdown, wilson_interval
from loop.preferences import NoiseConfig, NoisyPreference, concise


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # By hand with z = 1.96: centre = (p + z^2/2n) / (1 + z^2/n),
        # half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (8, 10, 0.4902, 0.9433),
        (50, 100, 0.4038, 0.5962),
        (7.5, 10, 0.4422, 0.9191),  # 7 wins + 1 tie counted half
    ],
)
def test_wilson_interval_matches_hand_computation(
    successes: float, n: int, low: float, high: float
) -> None:
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_wilson_interval_empty_is_uninformative() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_record_counts_ties_half_and_maps_shown_sides() -> None:
    report = EvalReport("concise", 0.0, SideStats("policy@v1"), SideStats("base"))
    voter = NoisyPreference(concise, NoiseConfig(0.0), random.Random(0))
    short, long = "Short answer here.", " ".join(["word"] * 30)
    _record(report, voter, concise, "q", True, (short, 4), (long, 30))  # A shown first, wins
    _record(report, voter, concise, "q", False, (short, 4), (long, 30))  # A shown second, wins
    _record(report, voter, concise, "q", True, (long, 30), (short, 4))  # A loses
    _record(report, voter, concise, "q", False, (short, 4), (short, 4))  # tie
    assert (report.wins, report.losses, report.ties) == (2, 1, 1)
    assert report.win_rate == pytest.approx(2.5 / 4)
    assert report.a_shown_first == 2
    assert report.a.words == [3, 3, 30, 3] and report.b.tokens == [30, 30, 4, 4]
    table = render_markdown(report)
    assert "| 4 | 2 | 1 | 1 | 0.625 |" in table
