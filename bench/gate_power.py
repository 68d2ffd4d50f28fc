"""Power of the reward-model gate: how often it passes reward models of known skill.

Simulated held-out votes (as 20 % of 500 comparisons: 100): a share of the pairs are equal to
the users (their votes are coin flips), the others differ by a utility gap drawn from an
exponential of mean 1.5 (Bradley-Terry votes, temperature 1). A reward model's score difference
is ``skill`` x the utility gap + unit Gaussian noise. For each skill the table gives the model's
accuracy against the noise-free ordering on the pairs that differ, its agreement with the votes,
and the pass rate of the gate with the accuracy test (one-sided Wilson bound > 0.5) and with the
signed-rank test (learner.gates.reward_gate, 95 %), both with the accuracy floor at 0.5.

Usage: ``.venv/bin/python -m bench.gate_power [--runs 2000] [--out bench/results/gate_power.md]``
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.bench_all import command_line, machine
from learner.gates import reward_gate
from learner.rm.loss import signed_rank_z


def trial(rng: random.Random, skill: float, votes: int, informative: float) -> dict[str, float]:
    margins, right, differ = [], 0, 0
    for _ in range(votes):
        gap = rng.expovariate(1 / 1.5) * rng.choice((-1, 1)) if rng.random() < informative else 0.0
        first_chosen = rng.random() < 1 / (1 + math.exp(-gap))
        score_gap = skill * gap + rng.gauss(0, 1)
        margins.append(score_gap if first_chosen else -score_gap)
        if gap:
            differ += 1
            right += (score_gap > 0) == (gap > 0)
    accuracy = sum(m > 0 for m in margins) / votes
    wilson = reward_gate(accuracy, votes, 0.5, 0.95).passed
    ranks = reward_gate(accuracy, votes, 0.5, 0.95, signed_rank_z(torch.tensor(margins))).passed
    return {
        "truth": right / differ if differ else float("nan"),
        "votes": accuracy,
        "wilson": float(wilson),
        "ranks": float(ranks),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--runs", type=int, default=2000, help="simulated held-out sets per cell")
    p.add_argument("--votes", type=int, default=100, help="held-out votes per set")
    p.add_argument("--informative", type=float, nargs="+", default=[0.4, 1.0])
    p.add_argument("--skills", type=float, nargs="+", default=[0.0, 0.3, 0.5, 1.0, 2.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the table here")
    args = p.parse_args()
    rng = random.Random(args.seed)
    lines = [
        "# Reward-model gate: pass rates by reward-model skill",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.gate_power "
        f"{command_line()}`",
        f"Machine: {machine()}.",
        f"{args.runs} simulated sets of {args.votes} held-out votes per row (see the script's "
        "docstring for the model).",
        "",
        "| pairs that differ | skill | RM accuracy vs truth | agreement with votes "
        "| pass: accuracy test | pass: signed-rank test |",
        "|---|---|---|---|---|---|",
    ]
    for informative in args.informative:
        for skill in args.skills:
            rows = [trial(rng, skill, args.votes, informative) for _ in range(args.runs)]
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            lines.append(
                f"| {informative:.0%} | {skill:g} | {mean['truth']:.3f} | {mean['votes']:.3f} "
                f"| {mean['wilson']:.2f} | {mean['ranks']:.2f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
