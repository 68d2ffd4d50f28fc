"""Per-user reliability weighting in simulation: is the weighted reward model more accurate?

Simulated answers are feature vectors x in R^d with a noise-free utility u(x) = w . x; 20 users
vote on pairs (Bradley-Terry noise at temperature ``--noise``), a share of them at random
(coin flips). A linear reward model r(x) = theta . x, zero-initialised, is trained on the votes
with the learner's own pieces: the pairwise loss (``learner.rm.loss.pairwise_loss``) and the
prequential reliability weights (``learner.rm.reliability.PrequentialWeights``) with the
reward model's default floor, shrinkage and warm-up. Three fits per seed, on the same votes:
unweighted, weighted, and an oracle that drops the random voters. Reported: accuracy against the
noise-free ordering on held-out pairs, and the paired difference weighted - unweighted with a
95 % interval over seeds.

Why a linear model on features: the question is about the weighting, and this model trains in
milliseconds, so every row averages many seeds; the transformer reward model uses the same loss
and the same weighting code (tests/learner/ml/test_reliability.py trains it with a coin-flipping
user).

Usage::

    .venv/bin/python -m bench.user_reliability --out bench/results/user_reliability.md
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.bench_all import command_line, machine
from learner.rm.config import RewardConfig
from learner.rm.loss import pairwise_loss
from learner.rm.reliability import PrequentialWeights

DIM = 32
USERS = 20
EVAL_PAIRS = 5000


@dataclass(frozen=True)
class Votes:
    chosen: torch.Tensor  # (N, d)
    rejected: torch.Tensor  # (N, d)
    users: list[str]
    random_voter: torch.Tensor  # (N,) bool


def simulate(
    n: int, random_share: float, noise: float, gen: torch.Generator, equal_share: float = 0.0
) -> tuple[torch.Tensor, Votes, float]:
    """The users' true weights, their votes on ``n`` pairs, and the label ceiling. A share
    ``equal_share`` of the pairs are equal to the users (the answers differ only in directions
    the utility ignores): everybody's vote on them is a coin flip."""
    w = torch.randn(DIM, generator=gen) / math.sqrt(DIM) * 2.0
    a, b = torch.randn(n, DIM, generator=gen), torch.randn(n, DIM, generator=gen)
    equal = torch.rand(n, generator=gen) < equal_share
    gap = b - a
    flat = gap - ((gap @ w) / (w @ w))[:, None] * w  # gap without its component along w
    b = torch.where(equal[:, None], a + flat, b)
    user_of = torch.randint(0, USERS, (n,), generator=gen)
    n_random = round(random_share * USERS)
    is_random = user_of < n_random
    p_a = torch.sigmoid((a - b) @ w / noise)
    p_a = torch.where(is_random, torch.full_like(p_a, 0.5), p_a)
    picks_a = torch.rand(n, generator=gen) < p_a
    chosen = torch.where(picks_a[:, None], a, b)
    rejected = torch.where(picks_a[:, None], b, a)
    truth_a = (a - b) @ w > 0
    ceiling = (torch.where(truth_a, p_a, 1 - p_a))[~equal].mean().item()
    users = [f"user-{int(u)}" for u in user_of]
    return w, Votes(chosen, rejected, users, is_random), ceiling


def fit(votes: Votes, mode: str, config: RewardConfig, seed: int) -> torch.Tensor:
    """Train theta with the learner's loss; ``mode`` is unweighted, weighted or oracle."""
    keep = ~votes.random_voter if mode == "oracle" else torch.ones_like(votes.random_voter)
    idx = torch.nonzero(keep).squeeze(1)
    theta = torch.zeros(DIM, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=config.learning_rate)
    batches_per_epoch = math.ceil(len(idx) / config.batch_size)
    weighting = PrequentialWeights(
        config.reliability_floor,
        config.reliability_prior_votes,
        config.reliability_warmup,
        batches_per_epoch,
    )
    gen = torch.Generator().manual_seed(seed)
    for _ in range(config.num_epochs):
        order = idx[torch.randperm(len(idx), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            chosen, rejected = votes.chosen[rows] @ theta, votes.rejected[rows] @ theta
            weights = torch.ones(len(rows))
            if mode == "weighted":
                users = [votes.users[int(i)] for i in rows]
                margins = (chosen - rejected).detach()
                weights = weighting.before_step(users, margins, torch.ones(len(rows)))
            loss = pairwise_loss(chosen, rejected, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return theta.detach()


def accuracy(theta: torch.Tensor, w: torch.Tensor, gen: torch.Generator) -> float:
    a, b = torch.randn(EVAL_PAIRS, DIM, generator=gen), torch.randn(EVAL_PAIRS, DIM, generator=gen)
    return (((a - b) @ theta > 0) == ((a - b) @ w > 0)).float().mean().item()


def interval(diffs: list[float]) -> str:
    mean = statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def row(
    comparisons: int,
    share: float,
    noise: float,
    seeds: int,
    config: RewardConfig,
    equal_share: float = 0.0,
) -> str:
    acc: dict[str, list[float]] = {"unweighted": [], "weighted": [], "oracle": []}
    ceilings = []
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        w, votes, ceiling = simulate(comparisons, share, noise, gen, equal_share)
        ceilings.append(ceiling)
        for mode in acc:
            theta = fit(votes, mode, config, seed)
            acc[mode].append(accuracy(theta, w, torch.Generator().manual_seed(10_000 + seed)))
    diffs = [wt - un for wt, un in zip(acc["weighted"], acc["unweighted"], strict=True)]
    cells = [f"{statistics.fmean(v):.3f}" for v in acc.values()]
    return (
        f"| {share:.0%} | {equal_share:.0%} | {noise:g} | {comparisons} "
        f"| {statistics.fmean(ceilings):.3f} | " + " | ".join(cells) + f" | {interval(diffs)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shares", default="0,0.2,0.4", help="random voters' share of users")
    parser.add_argument("--noises", default="0.5,1.0", help="Bradley-Terry temperatures")
    parser.add_argument(
        "--equal-shares", default="0", help="shares of pairs equal to the users (coin-flip votes)"
    )
    parser.add_argument("--comparisons", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = RewardConfig(num_epochs=args.epochs, batch_size=8, learning_rate=0.05)
    lines = [
        "# Per-user reliability weights in simulation",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"`.venv/bin/python -m bench.user_reliability {command_line()}`  ",
        f"Machine: {machine()}.",
        "",
        f"{USERS} users vote on {args.comparisons} pairs of {DIM}-feature answers (Bradley-Terry "
        "noise at the temperature shown; the random voters flip a coin); a linear reward model "
        f"is trained {args.epochs} epochs with the learner's pairwise loss and, for *weighted*, "
        "its prequential reliability weights (floor "
        f"{config.reliability_floor}, {config.reliability_prior_votes:g} prior votes, warm-up "
        f"{config.reliability_warmup:.0%} of the first epoch); *oracle* drops the random "
        f"voters. Accuracy against the noise-free ordering on {EVAL_PAIRS} held-out pairs, mean "
        f"of {args.seeds} seeds; the last column is the paired difference with its 95 % "
        "interval over seeds. Label ceiling: the share of votes that agree with the noise-free "
        "ordering, over the pairs that differ; *equal pairs*: the share of pairs whose answers "
        "differ only where the utility does not look (every vote on them a coin flip).",
        "",
        "| random voters | equal pairs | noise | votes | label ceiling | unweighted | weighted "
        "| oracle | weighted - unweighted [95 %] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for noise in (float(x) for x in args.noises.split(",")):
        for equal in (float(x) for x in args.equal_shares.split(",")):
            for share in (float(x) for x in args.shares.split(",")):
                lines.append(row(args.comparisons, share, noise, args.seeds, config, equal))
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
