"""How far must a policy move from the base, and how good must its reward model be, to win?

For each preference: the win rate against the base of best-of-n selections from the base
model's own answers (a pool from ``bench/rm_sweep.py generate`` or ``from-store``), by the true
utility (the oracle) and by scorers as accurate against the truth as the reward models this
project measured; with the KL bound of each n (``loop.frontier``). A policy trained by PPO on
a reward model is compared at its measured KL with the best-of-n row of the same KL.

Usage::

    .venv/bin/python -m bench.policy_frontier --pool var/rm_sweep/pool.jsonl \
        --preferences concise,friendly,format --out bench/results/policy_frontier.md
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from bench.acceptance import ACCEPTANCE_MAX_TOKENS
from bench.bench_all import command_line, machine
from bench.rm_sweep import Scored, load_pool, score_pool
from common.embedded_model import resolve_model_dir
from learner.modeling import load_tokenizer
from loop.frontier import best_of_n_kl_bound, frontier
from loop.preferences import load_preference
from loop.user_options import add_max_tokens_option


def answer_groups(rows: list[Scored], min_answers: int) -> list[list[float]]:
    """Utilities of every answer to each prompt (both sides of every pair), prompts with at
    least ``min_answers`` answers."""
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_prompt[row.prompt].extend(row.utilities)
    return [u for u in by_prompt.values() if len(u) >= min_answers]


def _table(args: argparse.Namespace, groups_by_pref: dict[str, list[list[float]]]) -> list[str]:
    ns = args.n
    scorers: list[float | None] = [None, *args.accuracies]
    lines = [
        "| preference | prompts | answers | scorer's accuracy vs truth | "
        + " | ".join(f"n={n} (KL <= {best_of_n_kl_bound(n):.2f})" for n in ns)
        + " |",
        "|---|---|---|---|" + "---|" * len(ns),
    ]
    for name, groups in groups_by_pref.items():
        answers = sum(len(g) for g in groups)
        for accuracy in scorers:
            label = "1.0 (oracle)" if accuracy is None else f"{accuracy:g}"
            cells = frontier(groups, ns, accuracy, args.trials, args.seed)
            lines.append(
                f"| {name} | {len(groups)} | {answers} | {label} | "
                + " | ".join(f"{c:.3f}" for c in cells)
                + " |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=Path, nargs="+", required=True, help="pool .jsonl files")
    p.add_argument("--preferences", default="concise,friendly,format")
    add_max_tokens_option(
        p, ACCEPTANCE_MAX_TOKENS, why="the acceptance run's answer length, which this predicts"
    )
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    p.add_argument(
        "--accuracies",
        type=float,
        nargs="+",
        default=[0.9, 0.8, 0.7, 0.6],
        help="scorers' accuracy against the noise-free ordering",
    )
    p.add_argument("--min-answers", type=int, default=4, help="skip prompts with fewer answers")
    p.add_argument("--trials", type=int, default=2000, help="Monte Carlo trials per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", default=None, help="tokenizer (default: the embedded model)")
    p.add_argument("--out", type=Path, default=None, help="append the table here")
    args = p.parse_args()
    if any(n < 1 for n in args.n) or any(not 0.5 < a <= 1 for a in args.accuracies):
        p.error("--n must be >= 1 and --accuracies in (0.5, 1]")

    tokenizer = load_tokenizer(resolve_model_dir(args.model_dir))
    pool = load_pool(list(args.pool))
    groups_by_pref = {
        name: answer_groups(
            score_pool(pool, tokenizer, load_preference(name), args.max_tokens), args.min_answers
        )
        for name in args.preferences.split(",")
    }
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.policy_frontier "
        f"{command_line()}` ({len(pool)} base-model answer pairs, max tokens {args.max_tokens}, "
        f"{args.trials} Monte Carlo trials per prompt).",
        f"Machine: {machine()}.",
        "",
        *_table(args, groups_by_pref),
    ]
    if args.out:
        with args.out.open("a") as sink:
            sink.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
