"""The votes-needed chain: frontier interpolation, the learning curve's three regimes, the fits,
and the votes in all that the gate's held-out share asks for."""

from __future__ import annotations

import math
import sys

import pytest

from bench import votes_needed as vn


def test_accuracy_for_win_interpolates_the_frontier() -> None:
    # concise, n = 16: 0.677 at 0.63, 0.792 at 0.725 -> 0.70 at 0.63 + 0.023 / 0.115 * 0.095
    assert vn.accuracy_for_win("concise", 0.70, 16) == pytest.approx(0.649, abs=1e-3)
    assert vn.accuracy_for_win("friendly", 0.70, 16) == pytest.approx(0.790, abs=1e-3)
    assert vn.accuracy_for_win("format", 0.70, 16) == pytest.approx(0.841, abs=1e-3)
    assert vn.accuracy_for_win("format", 0.80, 16) is None  # the oracle wins 0.788
    assert vn.accuracy_for_win("concise", 0.60, 16) == 0.59  # the first row already wins
    # A row's own win rate gives back its accuracy.
    assert vn.accuracy_for_win("friendly", 0.707, 16) == pytest.approx(0.80)


def test_fits_recover_exact_curves() -> None:
    votes = (100, 200, 400, 800)
    acc = tuple(0.5 + 0.03 * math.log(v) for v in votes)
    alpha, beta = vn.loglinear_fit(votes, acc)
    assert (alpha, beta) == (pytest.approx(0.5), pytest.approx(0.03))
    err = tuple(1 - 2.0 * v**-0.25 for v in votes)
    lnk, slope = vn.powerlaw_fit(votes, err)
    assert (math.exp(lnk), slope) == (pytest.approx(2.0), pytest.approx(-0.25))


def test_votes_for_accuracy_regimes() -> None:
    below = vn.votes_for_accuracy("concise", 0.70)
    assert (below.kind, below.votes) == ("below", 125)
    inside = vn.votes_for_accuracy("friendly", 0.632)  # halfway from 0.620 (250) to 0.644 (500)
    assert inside.kind == "measured"
    assert inside.votes == pytest.approx(math.sqrt(250 * 500))
    beyond = vn.votes_for_accuracy("friendly", 0.79)
    assert beyond.kind == "extrapolated" and beyond.flat_at is None
    alpha, beta = vn.loglinear_fit(vn.CURVE_VOTES, vn.CURVE["friendly"])
    assert alpha + beta * math.log(beyond.votes) == pytest.approx(0.79)
    assert beyond.powerlaw_votes > beyond.votes > 1300
    flat = vn.votes_for_accuracy("format", 0.84)
    assert flat.kind == "extrapolated" and flat.flat_at == pytest.approx(0.706)


def test_votes_in_all_is_set_by_the_gate_when_the_accuracy_comes_early() -> None:
    total, accuracy, held = vn.votes_in_all("concise", 125, 0.649)
    # 0.8 N reaches 0.80 on the curve, whose 75 held-out votes (the 0.75 row) are 0.2 N.
    assert (total, held) == (375, 75)
    assert accuracy == pytest.approx(vn.curve_accuracy("concise", 300))
    assert held is not None and held <= 0.2 * total
    assert vn.curve_accuracy("concise", 350 * 0.8) >= 0.75 and 75 > 0.2 * 350
    # Far beyond the curve the training votes decide.
    total, _, _ = vn.votes_in_all("friendly", 54000, 0.79)
    assert total == 25 * math.ceil(54000 / 0.8 / 25)
    assert vn.gate_held_out("friendly", 0.59) is None
    assert vn.gate_held_out("friendly", 0.79) == vn.GATE_HELD_OUT["friendly"][0.75]


def test_main_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["votes_needed"])
    assert vn.main() == 0
    out = capsys.readouterr().out
    assert "`.venv/bin/python -m bench.votes_needed`" in out
    main_table, fits = out.split("Fits over")
    rows = [line for line in main_table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 2 * len(vn.PREFERENCES)
    assert any(r.startswith("| concise | 16 | 1.84 | 0.649 | 125 |") for r in rows)
    assert "the curve flattens at 0.706 (not reached)" in out
    assert "| friendly | 0.605, 0.620, 0.644, 0.667, 0.676 | +0.0215 | 0.0864 |" in fits
