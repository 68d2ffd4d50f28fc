"""The gate-power bench: its calibration helpers, the power formula, the canary simulation, and
the default table it has always printed."""

from __future__ import annotations

import math
import random
import sys

import pytest

from bench import gate_power
from learner.canary import CanaryRules


def test_ceiling_and_skill_are_solved_back() -> None:
    assert gate_power.label_ceiling(gate_power.GAP_MEAN) == pytest.approx(0.747, abs=1e-3)
    assert gate_power.gap_mean_for_ceiling(gate_power.label_ceiling(1.5)) == pytest.approx(1.5)
    assert gate_power.label_ceiling(gate_power.gap_mean_for_ceiling(0.78)) == pytest.approx(0.78)
    assert gate_power.accuracy_of_skill(0.0, 1.5) == pytest.approx(0.5)
    # The default table's simulated accuracies: skill 1 -> 0.817, skill 0.3 -> 0.655.
    assert gate_power.accuracy_of_skill(1.0, 1.5) == pytest.approx(0.815, abs=2e-3)
    assert gate_power.accuracy_of_skill(0.3, 1.5) == pytest.approx(0.655, abs=2e-3)
    skill = gate_power.skill_for_accuracy(0.7, 1.5)
    assert gate_power.accuracy_of_skill(skill, 1.5) == pytest.approx(0.7, abs=1e-6)
    with pytest.raises(ValueError):
        gate_power.gap_mean_for_ceiling(0.5)


def test_vote_agreement_formula() -> None:
    assert gate_power.vote_agreement(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert gate_power.vote_agreement(0.5, 0.8, 1.0) == pytest.approx(0.5)
    assert gate_power.vote_agreement(0.9, 0.8, 0.0) == pytest.approx(0.5)
    # a c + (1 - a)(1 - c) on the informative pairs, 1/2 on the others
    a, c, s = 0.61, 0.78, 0.35
    direct = (1 - s) * 0.5 + s * (a * c + (1 - a) * (1 - c))
    assert gate_power.vote_agreement(a, c, s) == pytest.approx(direct)
    assert direct == pytest.approx(0.52, abs=0.005)


def test_votes_for_power_matches_the_exact_binomial_power() -> None:
    assert math.isinf(gate_power.votes_for_power(0.5))
    n = math.ceil(gate_power.votes_for_power(0.6, 0.95, 0.8))
    assert n == 153
    # The Wilson bound above 1/2 is the score test: pass when (k/n - 1/2) sqrt(n) / (1/2) > z.
    z = 1.6448536269514722
    k_min = math.floor(n / 2 + z * math.sqrt(n) / 2) + 1
    power = sum(math.comb(n, k) * 0.6**k * 0.4 ** (n - k) for k in range(k_min, n + 1))
    assert 0.75 < power < 0.85
    assert gate_power.votes_for_power(0.7) < gate_power.votes_for_power(0.6)


def test_canary_run_follows_the_decision_rules() -> None:
    rng = random.Random(0)
    outcome, votes = gate_power.canary_run(rng, 1.0, CanaryRules())
    assert outcome == "promoted" and 20 <= votes <= 40
    outcome, votes = gate_power.canary_run(rng, 0.0, CanaryRules())
    assert outcome == "rolled_back" and votes <= 40
    small = CanaryRules(max_votes=30)
    outcomes = [gate_power.canary_run(rng, 0.5, small)[0] for _ in range(50)]
    assert outcomes.count("cap") >= 45


def test_default_table_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["gate_power", "--runs", "3"])
    assert gate_power.main() == 0
    out = capsys.readouterr().out
    assert "3 simulated sets of 100 held-out votes per row" in out
    header = (
        "| pairs that differ | skill | RM accuracy vs truth | agreement with votes "
        "| pass: accuracy test | pass: signed-rank test |"
    )
    assert header in out
    rows = [line for line in out.split(header)[1].splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[:2] for r in rows] == [
        [f"| {i}", s] for i in ("40%", "100%") for s in ("0", "0.3", "0.5", "1", "2")
    ]
    assert "Held-out votes for" not in out and "Canary" not in out


def test_sweep_adds_the_power_and_canary_tables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = "--runs 4 --votes 10 20 --informative 1 --accuracies 0.7 --ceiling 0.7"
    monkeypatch.setattr(sys, "argv", ["gate_power", *argv.split(), "--canary-wins", "0.9"])
    assert gate_power.main() == 0
    out = capsys.readouterr().out
    assert "Utility gaps of mean" in out and "label ceiling 0.700" in out
    assert "| held-out votes | pairs that differ |" in out
    assert "| 10 | 100% |" in out and "| 20 | 100% |" in out
    assert "Held-out votes for a 80% pass rate" in out
    expected = math.ceil(gate_power.votes_for_power(gate_power.vote_agreement(0.7, 0.7, 1.0)))
    assert f"| 100% | 0.700 | 0.580 | {expected} |" in out
    assert "| 0.90 | 0.660 |" in out


def test_trial_reports_the_gates_verdict() -> None:
    """A strong model is nearly always certified; a chance-level one mostly uncertain, and
    contradicted about as rarely as it is certified (5 % each at 95 %)."""
    rng = random.Random(0)

    def shares(skill: float) -> dict[str, float]:
        rows = [gate_power.trial(rng, skill, 100, 1.0) for _ in range(200)]
        return {name: sum(r[name] for r in rows) / len(rows) for name in gate_power.OUTCOMES}

    strong, chance = shares(2.0), shares(0.0)
    assert sum(strong.values()) == pytest.approx(1.0) and sum(chance.values()) == pytest.approx(1.0)
    assert strong["certified"] > 0.95
    assert chance["uncertain"] > 0.8 and chance["contradicted"] < 0.12


def test_outcomes_option_adds_the_verdict_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = "--runs 4 --votes 10 20 --informative 1 --accuracies 0.7 --ceiling 0.7 --outcomes"
    monkeypatch.setattr(sys, "argv", ["gate_power", *argv.split()])
    assert gate_power.main() == 0
    out = capsys.readouterr().out
    header = "| held-out votes | certified | uncertain | contradicted |"
    assert header in out
    table = out.split(header)[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| 100% | 0.700 | ")]
    assert [row.split(" | ")[2] for row in rows] == ["10", "20"]
    for row in rows:
        assert sum(float(x) for x in row.strip("| ").split(" | ")[3:]) == pytest.approx(1.0)


def test_guarded_canary_table_uses_the_guarded_rules(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = "--runs 3 --informative 1 --skills 1 --canary-wins 0.5 --canary-guarded"
    monkeypatch.setattr(sys, "argv", ["gate_power", *argv.split()])
    assert gate_power.main() == 0
    out = capsys.readouterr().out
    cap = CanaryRules().guarded_max_votes
    rules = f"default rules: margin 0, alpha 0.05, at least 20 and at most {cap} decisive votes"
    assert f"Guarded canary (learner.canary.decide, {rules})" in out
