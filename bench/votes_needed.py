"""How many votes for a 70 % blind win against the base, per built-in preference, from what was
measured: no model is trained here, the script chains measured tables.

1. The reward-model accuracy against the users' noise-free ordering that a 70 % win takes: the
   best-of-n frontier (``bench/results/policy_frontier.md``) at n = 16 (KL <= 1.84 nats, the
   largest n it measured) and n = 8 (KL <= 1.20), interpolated linearly between its accuracy
   rows.
2. The training votes that reach that accuracy: the learning curve of the pooled frozen-body
   probe (``bench/results/rm_sweep.md``, "Learning curve"): below its first point the answer is
   "at most 125", inside its range a log-linear interpolation between the two points around it,
   beyond it an **extrapolation** by two least-squares fits over all five points, log-linear
   (acc = alpha + beta ln n) and a power law in the error (1 - acc = k n^-b), and a note where
   the curve stopped rising.
3. The held-out votes the reward-model gate needs to pass a model of that accuracy 4 times in 5
   (``bench/results/gate_power.md``, signed-rank test, simulated at this preference's label
   ceiling and share of informative pairs; the row of the largest accuracy not above it).
4. Votes in all: 80 % of the votes train and 20 % are held out (``learner/rm/config.py``
   ``eval_fraction``), so the fewest votes N whose 0.8 N reach the accuracy and whose 0.2 N let
   the gate pass a model of the curve's accuracy at 0.8 N.

Usage: ``.venv/bin/python -m bench.votes_needed [--win 0.7] [--out bench/results/votes_needed.md]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_all import command_line, machine

PREFERENCES = ("concise", "friendly", "format")

# bench/results/rm_sweep.md, "Learning curve: accuracy vs truth by the number of noisy votes
# (pooled probe)": mean+sum head input, L2 3, 1736 pairs, noise 1.0, 3 vote draws x 4 folds.
CURVE_VOTES = (125, 250, 500, 1000, 1300)
CURVE = {
    "concise": (0.780, 0.800, 0.812, 0.832, 0.834),
    "friendly": (0.605, 0.620, 0.644, 0.667, 0.676),
    "format": (0.569, 0.617, 0.649, 0.706, 0.706),
}
# Same table, "pairs that differ" of its 1736 pairs.
INFORMATIVE = {"concise": 1701 / 1736, "friendly": 717 / 1736, "format": 607 / 1736}

# bench/results/policy_frontier.md (run 2026-12-02 00:33 UTC): scorer's accuracy vs truth ->
# win rate against a base answer at n = 8 (KL <= 1.20) and n = 16 (KL <= 1.84); 1.0 is the oracle.
FRONTIER_KL = {8: 1.20, 16: 1.84}
FRONTIER: dict[str, dict[float, dict[int, float]]] = {
    "concise": {
        0.59: {8: 0.603, 16: 0.623},
        0.63: {8: 0.649, 16: 0.677},
        0.725: {8: 0.747, 16: 0.792},
        0.80: {8: 0.806, 16: 0.855},
        0.90: {8: 0.856, 16: 0.904},
        1.0: {8: 0.882, 16: 0.930},
    },
    "friendly": {
        0.59: {8: 0.548, 16: 0.557},
        0.63: {8: 0.570, 16: 0.584},
        0.725: {8: 0.625, 16: 0.653},
        0.80: {8: 0.668, 16: 0.707},
        0.90: {8: 0.724, 16: 0.776},
        1.0: {8: 0.772, 16: 0.835},
    },
    "format": {
        0.59: {8: 0.539, 16: 0.548},
        0.63: {8: 0.558, 16: 0.571},
        0.725: {8: 0.604, 16: 0.629},
        0.80: {8: 0.642, 16: 0.676},
        0.90: {8: 0.690, 16: 0.735},
        1.0: {8: 0.733, 16: 0.788},
    },
}

# bench/results/gate_power.md, "Power by held-out votes" (2026-12-07): held-out votes for an
# 80 % pass rate of the signed-rank gate, simulated at each preference's label ceiling (128
# tokens) and share of informative pairs, by the model's accuracy against the truth; None: not
# reached within the sweep (up to 600 held-out votes for concise, 4800 for the others).
GATE_HELD_OUT: dict[str, dict[float, int | None]] = {
    "concise": {0.60: 300, 0.65: 150, 0.70: 75, 0.75: 75, 0.85: 50},
    "friendly": {0.60: 1200, 0.65: 600, 0.70: 300, 0.75: 200, 0.85: 200},
    "format": {0.60: 1600, 0.65: 600, 0.70: 300, 0.75: 200, 0.85: 100},
}
HELD_OUT_SHARE = 0.2  # learner/rm/config.py eval_fraction

# Measured end to end: one-cycle acceptance runs from 500 votes alone (corrections off, 128
# tokens): blind win rate against the base (174 comparisons) or what stopped them.
MEASURED_500 = {
    "concise": [
        ("0.756 [0.687, 0.814]", "history/acceptance_votes_concise.md"),
        (
            "0.655 [0.527, 0.764] (58 blind comparisons at temperature 0.7)",
            "history/acceptance_votes_concise.md",
        ),
        ("0.595 [0.521, 0.665] (PPO moved 0.49 nats)", "history/acceptance_uniform_matched.md"),
        ("rejected at the KL gate, 10.88 nats", "acceptance_kl_stop.md"),
        ("0.825 [0.761, 0.874]", "acceptance_kl_stop.md"),
        ("rejected at the KL gate, 10.24 nats", "acceptance_kl_stop.md"),
        ("0.882 [0.826, 0.922] (informative pairing)", "acceptance_pairing.md"),
    ],
    "friendly": [
        ("rejected at the reward-model gate (z -0.15)", "acceptance_votes_friendly.md"),
        ("rejected at the reward-model gate (z 0.86)", "acceptance_votes_friendly.md"),
    ],
    "format": [("rejected at the reward-model gate (z -0.13)", "acceptance_votes_format.md")],
}


def accuracy_for_win(pref: str, win: float, n: int) -> float | None:
    """Accuracy against the truth at which best-of-n wins ``win`` (linear between the frontier's
    rows); None when even the oracle does not."""
    rows = sorted(FRONTIER[pref].items())
    if rows[0][1][n] >= win:
        return rows[0][0]
    for (a0, w0), (a1, w1) in itertools.pairwise(rows):
        if w0[n] < win <= w1[n]:
            return a0 + (win - w0[n]) / (w1[n] - w0[n]) * (a1 - a0)
    return None


def _least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def loglinear_fit(votes: tuple[int, ...], acc: tuple[float, ...]) -> tuple[float, float]:
    """(alpha, beta) of acc = alpha + beta ln(votes)."""
    return _least_squares([math.log(v) for v in votes], list(acc))


def powerlaw_fit(votes: tuple[int, ...], acc: tuple[float, ...]) -> tuple[float, float]:
    """(ln k, -b) of 1 - acc = k votes^-b, fitted as a line in log-log."""
    return _least_squares([math.log(v) for v in votes], [math.log(1 - a) for a in acc])


@dataclass(frozen=True)
class CurveAnswer:
    kind: str  # "below" (at most the first point), "measured" (interpolated), "extrapolated"
    votes: float  # training votes (the first point for "below"; the log-linear fit beyond)
    powerlaw_votes: float = math.nan  # the power-law fit's answer, when extrapolated
    flat_at: float | None = None  # the curve's last value, when its last segment did not rise


def votes_for_accuracy(pref: str, accuracy: float) -> CurveAnswer:
    acc = CURVE[pref]
    if accuracy <= acc[0]:
        return CurveAnswer("below", CURVE_VOTES[0])
    pairs = list(zip(CURVE_VOTES, acc, strict=True))
    for (v0, a0), (v1, a1) in itertools.pairwise(pairs):
        if a0 < accuracy <= a1:
            t = (accuracy - a0) / (a1 - a0)
            return CurveAnswer("measured", math.exp(math.log(v0) + t * math.log(v1 / v0)))
    alpha, beta = loglinear_fit(CURVE_VOTES, acc)
    lnk, slope = powerlaw_fit(CURVE_VOTES, acc)
    flat = acc[-1] if acc[-1] - acc[-2] <= 0.005 else None
    return CurveAnswer(
        "extrapolated",
        math.exp((accuracy - alpha) / beta),
        math.exp((math.log(1 - accuracy) - lnk) / slope),
        flat,
    )


def curve_accuracy(pref: str, train_votes: float) -> float:
    """The curve's accuracy at ``train_votes`` inside its range (log-linear between points),
    the log-linear fit beyond it; at most 1."""
    acc = CURVE[pref]
    if train_votes <= CURVE_VOTES[0]:
        return acc[0]
    pairs = list(zip(CURVE_VOTES, acc, strict=True))
    for (v0, a0), (v1, a1) in itertools.pairwise(pairs):
        if v0 < train_votes <= v1:
            return a0 + math.log(train_votes / v0) / math.log(v1 / v0) * (a1 - a0)
    alpha, beta = loglinear_fit(CURVE_VOTES, acc)
    return min(1.0, alpha + beta * math.log(train_votes))


def gate_held_out(pref: str, accuracy: float) -> int | None:
    """Held-out votes for an 80 % pass of a model of ``accuracy``: the simulated row of the
    largest accuracy not above it (conservative); None below the table."""
    rows = [(a, n) for a, n in sorted(GATE_HELD_OUT[pref].items()) if a <= accuracy + 1e-9]
    return rows[-1][1] if rows else None


def votes_in_all(pref: str, train: float, needed: float) -> tuple[float, float, int | None]:
    """The fewest votes N (in steps of 25) whose 80 % train on at least ``train`` votes and
    whose 20 % held out let the gate pass, 4 times in 5, a model of the curve's accuracy at
    0.8 N (at least ``needed``): (N, that accuracy, the held-out votes the gate needs)."""
    total = 25 * math.ceil(train / (1 - HELD_OUT_SHARE) / 25)
    while True:
        accuracy = max(needed, curve_accuracy(pref, total * (1 - HELD_OUT_SHARE)))
        held = gate_held_out(pref, accuracy)
        if held is None or held <= total * HELD_OUT_SHARE + 1e-9:
            return total, accuracy, held
        total += 25


def _round(votes: float) -> str:
    """Two significant digits above 1000."""
    return f"{votes:.0f}" if votes < 1000 else f"{float(f'{votes:.2g}'):,.0f}"


def table(win: float) -> list[str]:
    lines = [
        f"| preference | n | KL <= nats | accuracy for a {win:.0%} win | training votes "
        "| how | informative training votes | curve's accuracy at 80 % of the votes in all "
        "| held-out votes the gate needs | votes in all (80 % training, 20 % held out) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pref in PREFERENCES:
        for n in (16, 8):
            needed = accuracy_for_win(pref, win, n)
            if needed is None:
                lines.append(
                    f"| {pref} | {n} | {FRONTIER_KL[n]:.2f} | not even the oracle "
                    "| - | - | - | - | - | - |"
                )
                continue
            answer = votes_for_accuracy(pref, needed)
            if answer.kind == "below":
                how, train = f"at most {CURVE_VOTES[0]} (the curve's first point)", answer.votes
            elif answer.kind == "measured":
                how, train = "interpolated in the measured curve", answer.votes
            else:
                how = (
                    f"extrapolated: log-linear {_round(answer.votes)}, "
                    f"power law {_round(answer.powerlaw_votes)}"
                )
                if answer.flat_at is not None:
                    how += f"; the curve flattens at {answer.flat_at:.3f} (not reached)"
                train = answer.votes
            total, reached, held = votes_in_all(pref, train, needed)
            lines.append(
                f"| {pref} | {n} | {FRONTIER_KL[n]:.2f} | {needed:.3f} | {_round(train)} | {how} "
                f"| {_round(train * INFORMATIVE[pref])} | {reached:.3f} "
                f"| {held if held is not None else '> sweep'} | {_round(total)} |"
            )
    return lines


def fits() -> list[str]:
    """The learning curve and both fits, for each preference."""
    lines = [
        "Fits over the curve's five points (training votes "
        + ", ".join(map(str, CURVE_VOTES))
        + "):",
        "",
        "| preference | accuracy vs truth at those votes | log-linear: per doubling "
        "| power law: 1 - acc proportional to votes^-b, b |",
        "|---|---|---|---|",
    ]
    for pref in PREFERENCES:
        _, beta = loglinear_fit(CURVE_VOTES, CURVE[pref])
        _, slope = powerlaw_fit(CURVE_VOTES, CURVE[pref])
        lines.append(
            f"| {pref} | {', '.join(f'{a:.3f}' for a in CURVE[pref])} "
            f"| {beta * math.log(2):+.4f} | {-slope:.4f} |"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--win", type=float, default=0.7, help="blind win rate against the base")
    p.add_argument("--out", type=Path, default=None, help="write the report here")
    args = p.parse_args()
    lines = [
        f"# Votes for a {args.win:.0%} blind win against the base (SmolLM2-135M)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"`{' '.join(filter(None, ['.venv/bin/python -m bench.votes_needed', command_line()]))}`",
        f"Machine: {machine()}.",
        "Inputs (in the script, with their sources): the best-of-n frontier "
        "(`policy_frontier.md`), the pooled probe's learning curve (`rm_sweep.md`), the gate's "
        "simulated power (`gate_power.md`, the row of the largest accuracy not above the model's); "
        "votes in all: the fewest (in steps of 25) whose 80 % reach the accuracy and whose 20 % "
        "let the gate pass it 4 times in 5.",
        "",
        *table(args.win),
        "",
        *fits(),
        "",
        "Measured end to end from 500 votes alone (one cycle):",
        "",
    ]
    for pref in PREFERENCES:
        runs = "; ".join(f"{what} (`{where}`)" for what, where in MEASURED_500[pref])
        lines.append(f"- {pref}: {runs}")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
