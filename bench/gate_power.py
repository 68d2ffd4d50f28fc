"""Power of the reward-model gate: how often it passes reward models of known skill.

Simulated held-out votes (as 20 % of 500 comparisons: 100): a share of the pairs are equal to
the users (their votes are coin flips), the others differ by a utility gap drawn from an
exponential of mean 1.5 (Bradley-Terry votes, temperature 1). A reward model's score difference
is ``skill`` x the utility gap + unit Gaussian noise. For each skill the table gives the model's
accuracy against the noise-free ordering on the pairs that differ, its agreement with the votes,
and the pass rate of the gate with the accuracy test (one-sided Wilson bound > 0.5) and with the
signed-rank test (learner.gates.reward_gate, 95 %), both with the accuracy floor at 0.5.

Options for a power calculation (the defaults reproduce the table above):

- ``--accuracies A ...`` instead of ``--skills``: the skill is solved for each accuracy against
  the noise-free ordering (E[Phi(skill x gap)] over the exponential gaps = A);
- ``--ceiling C``: the gaps' mean is solved so that one vote on a pair that differs agrees with
  the noise-free ordering with probability C (the label ceiling; E[sigmoid(gap)] = C; default:
  mean 1.5, a ceiling of 0.747);
- ``--votes N ...`` with several counts: a sweep, then a table of the held-out votes each model
  needs for a pass rate of ``--power`` (0.8): the smallest swept count that reaches it in the
  simulation, beside the normal formula for the accuracy test,

      p = 1/2 + s (2a - 1)(2c - 1) / 2,   n = ((z_conf / 2 + z_power sqrt(p (1 - p))) / (p - 1/2))^2

  where a is the accuracy against the truth, c the label ceiling, s the share of pairs that
  differ (the others are coin flips) and p the chance that the model agrees with one noisy vote
  if its errors and the vote's noise are independent (the one-sided Wilson bound above 1/2 is
  the score test of p = 1/2, so the formula is that test's power); the simulation's models are
  right more often on the wide gaps, where the votes are too, so they agree with more votes;
- ``--canary-wins W ...``: the canary's decision (learner.canary.decide, default rules) for a
  policy that wins W of blind comparisons with the serving version under the noise-free judge
  (ties 1/2): the users' votes favour it with probability 1/2 + (W - 1/2)(2c - 1) (same
  independence), and the table gives how often it is promoted within the rules' vote cap and
  after how many decisive votes (``--canary-guarded``: under a guarded canary's rules, margin 0
  and its own cap, ``CanaryRules.for_canary``);
- ``--outcomes``: also the share of held-out sets whose reward model the gate's classification
  (learner.gates.classify_reward_model, signed-rank test) certifies, finds uncertain (a guarded
  canary may judge it) or contradicts (worse than chance).

Usage: ``.venv/bin/python -m bench.gate_power [--runs 2000] [--out bench/results/gate_power.md]``
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist, median

import torch

from bench.bench_all import command_line, machine
from learner.canary import CanaryEvidence, CanaryRules, decide
from learner.gates import classify_reward_model, reward_gate
from learner.rm.loss import signed_rank_z

GAP_MEAN = 1.5  # mean utility gap of the pairs that differ, unless --ceiling sets it
OUTCOMES = ("certified", "uncertain", "contradicted")  # learner.gates.RewardOutcome


def expected_over_gaps(f: Callable[[float], float], gap_mean: float, steps: int = 2000) -> float:
    """E[f(g)] for g exponential of mean ``gap_mean`` (Simpson's rule on g / mean in [0, 40])."""
    h = 40.0 / steps
    total = 0.0
    for i in range(steps + 1):
        weight = 1 if i in (0, steps) else 4 if i % 2 else 2
        total += weight * f(i * h * gap_mean) * math.exp(-i * h)
    return total * h / 3


def label_ceiling(gap_mean: float) -> float:
    """Chance that one vote (Bradley-Terry, temperature 1) on a pair that differs agrees with the
    noise-free ordering."""
    return expected_over_gaps(lambda g: 1 / (1 + math.exp(-g)), gap_mean)


def _mean(values: list[float]) -> float:
    """The mean of the values that are numbers: a set whose pairs are all equal to the users
    has no accuracy against the truth (NaN), and says nothing about it."""
    known = [v for v in values if not math.isnan(v)]
    return sum(known) / len(known) if known else float("nan")


def accuracy_of_skill(skill: float, gap_mean: float) -> float:
    """Accuracy against the noise-free ordering of a model scoring skill x gap + N(0, 1)."""
    cdf = NormalDist().cdf
    return expected_over_gaps(lambda g: cdf(skill * g), gap_mean)


def _solve(f: Callable[[float], float], target: float, low: float, high: float) -> float:
    """x in [low, high] with f(x) = target, f increasing (bisection)."""
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) < target else (low, mid)
    return (low + high) / 2


def gap_mean_for_ceiling(ceiling: float) -> float:
    if not 0.5 < ceiling < 1:
        raise ValueError("the label ceiling must be in (0.5, 1)")
    return _solve(label_ceiling, ceiling, 1e-4, 500.0)


def skill_for_accuracy(accuracy: float, gap_mean: float) -> float:
    if not 0.5 <= accuracy < 1:
        raise ValueError("the accuracy must be in [0.5, 1)")
    return _solve(lambda k: accuracy_of_skill(k, gap_mean), accuracy, 0.0, 1000.0)


def vote_agreement(accuracy: float, ceiling: float, informative: float) -> float:
    """Chance that a model of this accuracy against the truth agrees with one noisy vote, its
    errors independent of the vote's noise; pairs that do not differ are coin flips."""
    return 0.5 + informative * (2 * accuracy - 1) * (2 * ceiling - 1) / 2


def votes_for_power(agreement: float, confidence: float = 0.95, power: float = 0.8) -> float:
    """Held-out votes for the one-sided score test of agreement = 1/2 (the Wilson bound above
    1/2) to pass with probability ``power`` (normal approximation); inf at chance."""
    if agreement <= 0.5:
        return math.inf
    z = NormalDist().inv_cdf
    spread = z(confidence) / 2 + z(power) * math.sqrt(agreement * (1 - agreement))
    return (spread / (agreement - 0.5)) ** 2


def canary_run(rng: random.Random, vote_win: float, rules: CanaryRules) -> tuple[str, int]:
    """One canary decided by ``decide`` on decisive votes won with probability ``vote_win``:
    (outcome, decisive votes at the decision), the outcome ``promoted``, ``rolled_back`` (the
    win rate's upper bound fell below 1/2) or ``cap`` (rolled back undecided at the vote cap)."""
    wins = losses = 0
    while wins + losses < rules.max_votes:
        if rng.random() < vote_win:
            wins += 1
        else:
            losses += 1
        outcome, why = decide(CanaryEvidence(wins=wins, losses=losses), 0.0, rules)
        if outcome:
            return ("cap" if why.startswith("undecided") else outcome), wins + losses
    return "cap", wins + losses


def trial(
    rng: random.Random, skill: float, votes: int, informative: float, gap_mean: float = GAP_MEAN
) -> dict[str, float]:
    margins, right, differ = [], 0, 0
    for _ in range(votes):
        gap = (
            rng.expovariate(1 / gap_mean) * rng.choice((-1, 1))
            if rng.random() < informative
            else 0.0
        )
        first_chosen = rng.random() < 1 / (1 + math.exp(-gap))
        score_gap = skill * gap + rng.gauss(0, 1)
        margins.append(score_gap if first_chosen else -score_gap)
        if gap:
            differ += 1
            right += (score_gap > 0) == (gap > 0)
    accuracy = sum(m > 0 for m in margins) / votes
    z = signed_rank_z(torch.tensor(margins))
    wilson = reward_gate(accuracy, votes, 0.5, 0.95).passed
    ranks = reward_gate(accuracy, votes, 0.5, 0.95, z).passed
    outcome = classify_reward_model(accuracy, votes, 0.5, 0.95, z).outcome
    return {
        "truth": right / differ if differ else float("nan"),
        "votes": accuracy,
        "wilson": float(wilson),
        "ranks": float(ranks),
        **{name: float(outcome == name) for name in OUTCOMES},
    }


def _power_table(
    cells: list[tuple[float, float, float, dict[int, dict[str, float]]]],
    ceiling: float,
    power: float,
) -> list[str]:
    """Per model, the held-out votes for a pass rate of ``power``: the formula, and the smallest
    swept count that reached it in the simulation."""

    def first(by_votes: dict[int, dict[str, float]], key: str) -> str:
        reached = [n for n, cell in sorted(by_votes.items()) if cell[key] >= power]
        return str(reached[0]) if reached else f"> {max(by_votes)}"

    lines = [
        f"Held-out votes for a {power:.0%} pass rate at the gate's 95 % (label ceiling "
        f"{ceiling:.3f} on the pairs that differ; formula: normal approximation of the "
        "accuracy test with independent errors; simulated: the smallest swept count reaching it):",
        "",
        "| pairs that differ | RM accuracy vs truth | agreement with votes: formula "
        "| accuracy test: formula | accuracy test: simulated | signed-rank test: simulated |",
        "|---|---|---|---|---|---|",
    ]
    for informative, _skill, accuracy, by_votes in cells:
        p = vote_agreement(accuracy, ceiling, informative)
        needed = votes_for_power(p, 0.95, power)
        formula = "never" if math.isinf(needed) else str(math.ceil(needed))
        lines.append(
            f"| {informative:.0%} | {accuracy:.3f} | {p:.3f} | {formula} "
            f"| {first(by_votes, 'wilson')} | {first(by_votes, 'ranks')} |"
        )
    return lines


def _outcome_table(
    cells: list[tuple[float, float, float, dict[int, dict[str, float]]]],
) -> list[str]:
    """Per model and held-out count, how the gate's classification (signed-rank) splits."""
    lines = [
        "The gate's verdict (learner.gates.classify_reward_model, signed-rank test at 95 %): "
        "share of held-out sets:",
        "",
        "| pairs that differ | RM accuracy vs truth | held-out votes | certified | uncertain "
        "| contradicted |",
        "|---|---|---|---|---|---|",
    ]
    for informative, _skill, accuracy, by_votes in cells:
        for votes, cell in sorted(by_votes.items()):
            shares = " | ".join(f"{cell[name]:.2f}" for name in OUTCOMES)
            lines.append(f"| {informative:.0%} | {accuracy:.3f} | {votes} | {shares} |")
    return lines


def _canary_table(
    rng: random.Random, wins: list[float], ceiling: float, runs: int, guarded: bool = False
) -> list[str]:
    rules = CanaryRules().for_canary(guarded)
    lines = [
        f"{'Guarded canary' if guarded else 'Canary'} (learner.canary.decide, default rules: "
        f"margin {rules.margin:g}, alpha {rules.alpha:g}, at least "
        f"{rules.min_votes} and at most {rules.max_votes} decisive votes), {runs} simulated "
        f"canaries per row, users' label ceiling {ceiling:.3f}:",
        "",
        "| policy's blind win vs serving (noise-free judge) | users' votes for it | promoted "
        "| rolled back | rolled back undecided at the cap | decisive votes to promotion: median |",
        "|---|---|---|---|---|---|",
    ]
    for win in wins:
        vote_win = 0.5 + (win - 0.5) * (2 * ceiling - 1)
        results = [canary_run(rng, vote_win, rules) for _ in range(runs)]
        promoted = [n for outcome, n in results if outcome == "promoted"]
        rolled = sum(outcome == "rolled_back" for outcome, _ in results)
        capped = sum(outcome == "cap" for outcome, _ in results)
        lines.append(
            f"| {win:.2f} | {vote_win:.3f} | {len(promoted) / runs:.2f} | {rolled / runs:.2f} "
            f"| {capped / runs:.2f} | {f'{median(promoted):.0f}' if promoted else '-'} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--runs", type=int, default=2000, help="simulated held-out sets per cell")
    p.add_argument(
        "--votes",
        type=int,
        nargs="+",
        default=[100],
        help="held-out votes per set; several: a sweep and the votes needed for --power",
    )
    p.add_argument("--informative", type=float, nargs="+", default=[0.4, 1.0])
    p.add_argument("--skills", type=float, nargs="+", default=[0.0, 0.3, 0.5, 1.0, 2.0])
    p.add_argument(
        "--accuracies",
        type=float,
        nargs="+",
        default=None,
        help="instead of --skills: models' accuracy against the noise-free ordering",
    )
    p.add_argument(
        "--ceiling",
        type=float,
        default=None,
        help="label ceiling of one vote on the pairs that differ (default: gaps of mean 1.5)",
    )
    p.add_argument("--power", type=float, default=0.8, help="pass rate the votes are sized for")
    p.add_argument(
        "--canary-wins",
        type=float,
        nargs="+",
        default=None,
        help="also simulate the canary for policies of these blind win rates",
    )
    p.add_argument(
        "--canary-guarded",
        action="store_true",
        help="simulate the canary under a guarded canary's rules",
    )
    p.add_argument(
        "--outcomes",
        action="store_true",
        help="also the shares the gate certifies, finds uncertain and contradicts",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the table here")
    args = p.parse_args()
    rng = random.Random(args.seed)
    gap_mean = GAP_MEAN if args.ceiling is None else gap_mean_for_ceiling(args.ceiling)
    ceiling = label_ceiling(gap_mean) if args.ceiling is None else args.ceiling
    skills = (
        args.skills
        if args.accuracies is None
        else [skill_for_accuracy(a, gap_mean) for a in args.accuracies]
    )
    sweep = len(args.votes) > 1
    lines = [
        "# Reward-model gate: pass rates by reward-model skill",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.gate_power "
        f"{command_line()}`",
        f"Machine: {machine()}.",
        f"{args.runs} simulated sets of {', '.join(map(str, args.votes))} held-out votes per row "
        "(see the script's docstring for the model).",
        "",
        "| pairs that differ | skill | RM accuracy vs truth | agreement with votes "
        "| pass: accuracy test | pass: signed-rank test |",
        "|---|---|---|---|---|---|",
    ]
    if args.ceiling is not None:
        lines[5:5] = [
            f"Utility gaps of mean {gap_mean:.3f}: label ceiling {ceiling:.3f} on the pairs "
            "that differ.",
        ]
    if sweep:
        lines[-2] = "| held-out votes " + lines[-2]
        lines[-1] = "|---" + lines[-1]
    cells = []
    for informative in args.informative:
        for index, skill in enumerate(skills):
            by_votes = {}
            for votes in args.votes:
                rows = [trial(rng, skill, votes, informative, gap_mean) for _ in range(args.runs)]
                mean = {k: _mean([r[k] for r in rows]) for k in rows[0]}
                by_votes[votes] = mean
                lines.append(
                    ("| {votes} " if sweep else "").format(votes=votes)
                    + f"| {informative:.0%} | {round(skill, 6):.3g} | {mean['truth']:.3f} "
                    f"| {mean['votes']:.3f} | {mean['wilson']:.2f} | {mean['ranks']:.2f} |"
                )
                print(lines[-1], flush=True)
            accuracy = (
                args.accuracies[index]
                if args.accuracies is not None
                else accuracy_of_skill(skill, gap_mean)
            )
            cells.append((informative, skill, accuracy, by_votes))
    if sweep:
        lines += ["", *_power_table(cells, ceiling, args.power)]
    if args.outcomes:
        lines += ["", *_outcome_table(cells)]
    if args.canary_wins:
        lines += [
            "",
            *_canary_table(rng, args.canary_wins, ceiling, args.runs, args.canary_guarded),
        ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
