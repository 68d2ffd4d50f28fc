"""``rlhf-sim``: the simulated users (:mod:`loop.sim`) from the command line, with live progress
and a summary at the end.

``python -m loop.sim_cli --base-url http://127.0.0.1:8000 --api-key KEY --comparisons 200``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.cli import command_parser, config_from_args
from loop import sim
from loop.preferences import NoiseConfig
from loop.sim import SimConfig, SimStats, Simulator
from loop.user_options import add_max_tokens_option, add_user_options


def add_vote_kind_options(parser: argparse.ArgumentParser) -> None:
    """How often a user votes tie or both bad instead of picking an answer."""
    parser.add_argument("--tie-rate", type=float, default=0.0, help="chance of voting tie")
    parser.add_argument(
        "--both-bad-rate", type=float, default=0.0, help="chance of voting both bad"
    )


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(sim.__doc__, prog="rlhf-sim")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="serving root URL")
    p.add_argument("--api-key", default="none", help="chat API key (Bearer)")
    p.add_argument("--model", default=None, help="model id (default: first of /v1/models)")
    add_user_options(p, comparisons=100, concurrency=4)
    p.add_argument("--duration", type=float, default=0.0, help="stop after seconds (0 = none)")
    add_vote_kind_options(p)
    p.add_argument("--thumbs-rate", type=float, default=0.1, help="chance of a thumbs vote too")
    p.add_argument("--correction-rate", type=float, default=0.05, help="chance of a correction too")
    p.add_argument("--k", type=int, default=2, help="answers per comparison")
    add_max_tokens_option(p)
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default: the server's)",
    )
    p.add_argument("--users", type=int, default=20, help="distinct simulated users")
    p.add_argument("--prompts", default="train", help="train | eval | path to a JSONL file")
    p.add_argument("--seed", type=int, default=0, help="seed of the users' random choices")
    p.add_argument("--json-out", type=Path, default=None, help="write final stats as JSON")
    return p


def sim_config(args: argparse.Namespace) -> SimConfig:
    noise = NoiseConfig(args.noise, args.tie_rate, args.both_bad_rate)
    return config_from_args(SimConfig, args, noise=noise)


async def _run_with_progress(sim: Simulator) -> SimStats:
    task = asyncio.ensure_future(sim.run())
    total = sim.config.comparisons or None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # plain periodic log lines
        while not task.done():
            await asyncio.wait([task], timeout=5.0)
            snap = sim.stats.snapshot()
            print(
                f"pairs {snap['pairs']}/{total or '-'} feedback {snap['feedback_ok']} "
                f"errors {snap['errors']}",
                file=sys.stderr,
                flush=True,
            )
        return await task
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} pairs  {task.fields[info]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        bar = progress.add_task("simulated users", total=total, info="")
        while not task.done():
            await asyncio.wait([task], timeout=0.5)
            snap = sim.stats.snapshot()
            info = (
                f"votes {sum(snap['votes'].values())}  "
                f"feedback {sum(snap['feedback_ok'].values())}  "
                f"errors {sum(snap['errors'].values())}  version {snap['last_version']}"
            )
            progress.update(bar, completed=snap["pairs"], info=info)
    return await task


def summary_lines(snap: dict[str, Any]) -> list[str]:
    lines = [
        f"pairs served: {snap['pairs']} (requests {snap['requests']}, "
        f"{snap['elapsed_seconds']:.0f} s)",
        f"votes: {snap['votes']}",
        f"feedback accepted: {snap['feedback_ok']}  refused/failed: {snap['feedback_failed']}",
        f"errors: {snap['errors']}",
        "| version | answers | mean utility | mean words |",
        "|---|---|---|---|",
    ]
    for version, row in sorted(snap["answers_by_version"].items()):
        lines.append(
            f"| {version} | {row['answers']} | {row['mean_utility']:.3f} | "
            f"{row['mean_words']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.logs import configure_logging

    configure_logging(logging.WARNING)
    try:
        sim = Simulator(sim_config(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(_run_with_progress(sim))
    except KeyboardInterrupt:
        sim.request_stop()
        stats = sim.stats
    snap = stats.snapshot()
    print("\n".join(summary_lines(snap)))
    if args.json_out:
        args.json_out.write_text(json.dumps({"config": _config_dict(sim.config), **snap}, indent=2))
    return 0 if snap["pairs"] else 1


def _config_dict(config: SimConfig) -> dict[str, Any]:
    out = asdict(config)
    out.pop("api_key", None)
    return out


if __name__ == "__main__":
    sys.exit(main())
