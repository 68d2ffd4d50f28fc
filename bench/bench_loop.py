"""Time from the N-th comparison to a new adapter serving, on the real model (whole loop).

Starts the demo's processes (dev broker, ``serve``, ``learner run`` with
``LEARNER_MIN_NEW_COMPARISONS=N``) and simulated users who make N comparisons and stop: on a
2-core machine serving and the learner share the cores, and live traffic beside training made
one PPO iteration 10x slower (416 s instead of ~35 s; measured), so the learner gets the machine
as it would its own node in production. Clocks, all on this process's monotonic clock, polled
every 0.25 s:

- ``t_n``: the API accepted the N-th preference vote (what triggers the learner's cycle);
- ``t_published``: ``adapter.published`` for the new version appeared on the adapters topic;
- ``t_serving``: serving's ``/admin/adapters`` reports the new version as serving;
- ``t_answer``: a chat request sent after that (as a new user's) came back from the new version.

The learner's stage durations come from its own ``/metrics``. Gates are opened by default
(``--open-gates``): this measures how long the pipeline takes, not whether N comparisons are
enough for a better model (that is the acceptance run, ``bench/acceptance.py``); every stage
still runs in full.

Usage: ``.venv/bin/python -m bench.bench_loop [--comparisons 64] [--out bench/results/loop.md]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import command_parser
from loop.client import ServiceClient
from loop.demo import DEMO_MAX_TOKENS, Demo, benchmark_config
from loop.monitor import admin_adapters, metric_sum, scrape
from loop.service_options import add_env_option
from loop.user_options import add_max_tokens_option, add_user_options

OPEN_GATES = {
    "LEARNER_RM_MIN_ACCURACY": "0.0",
    "LEARNER_RM_GATE_CONFIDENCE": "0",
    "LEARNER_MIN_REWARD_GAIN": "-1e9",
    "LEARNER_KL_BUDGET": "1e9",
}
STAGES = ("sft", "reward", "ppo", "evaluate", "publish", "announce")


@dataclass
class LoopTiming:
    comparisons: int
    t_n: float | None = None
    t_published: float | None = None
    t_serving: float | None = None
    t_answer: float | None = None
    version: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    outcome: str = "timeout"

    def since_n(self, t: float | None) -> float | None:
        return None if t is None or self.t_n is None else t - self.t_n


async def _probe_version(demo: Demo) -> str | None:
    """One chat request as a new user would send it: which version answered."""
    client = ServiceClient(demo.root, demo.api_key)
    try:
        result = await client.chat(
            "Say hello.", model=await client.model_id(), user="bench-probe", max_tokens=8
        )
    finally:
        await client.aclose()
    return result.answers[0].adapter_version if result.answers else None


def measure(demo: Demo, n: int, timeout: float) -> LoopTiming:
    """Poll the running demo until a request is answered by a new version (or timeout)."""
    assert demo.sim is not None and demo.watcher is not None
    timing = LoopTiming(n)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        sim = demo.sim.stats.snapshot()
        if timing.t_n is None and sim["feedback_ok"].get("preference", 0) >= n:
            timing.t_n = now
        published = [e for e in demo.watcher.snapshot() if e.kind == "adapter.published"]
        if timing.t_published is None and published:
            timing.t_published, timing.version = now, published[0].version
        serving = (admin_adapters(demo.root, demo.admin_token) or {}).get("serving_version")
        if timing.t_serving is None and serving not in (None, "base"):
            timing.t_serving = now
        if timing.t_serving is not None and asyncio.run(_probe_version(demo)) == serving:
            timing.t_answer = time.monotonic()
            timing.outcome = "served"
            break
        if demo.learner is not None and not demo.learner.running:
            timing.outcome = f"learner exited ({demo.learner.returncode})"
            break
        time.sleep(0.25)
    learner = scrape(f"http://127.0.0.1:{demo.metrics_port}/metrics")
    for stage in STAGES:
        seconds = metric_sum(learner, "rlhf_learner_stage_duration_seconds_sum", stage=stage)
        if seconds:
            timing.stage_seconds[stage] = seconds
    return timing


def run(args: argparse.Namespace) -> LoopTiming:
    config = benchmark_config(
        args,
        dict(OPEN_GATES) if args.open_gates else {},
        preference=args.preference,
        comparisons=args.comparisons,
        cycle_comparisons=args.comparisons,
        concurrency=args.concurrency,
        rate=args.rate,
        noise=args.noise,
        max_tokens=args.max_tokens,
    )
    demo = Demo(config)
    try:
        demo.start()
        timing = measure(demo, args.comparisons, args.timeout)
    finally:
        demo.shutdown("benchmark finished")
    return timing


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def table(timing: LoopTiming, args: argparse.Namespace) -> str:
    since = timing.since_n
    rows = [
        ("N-th comparison accepted -> adapter.published", _fmt(since(timing.t_published))),
        ("N-th comparison accepted -> serving reports it", _fmt(since(timing.t_serving))),
        ("N-th comparison accepted -> first answer from it", _fmt(since(timing.t_answer))),
    ]
    rows += [
        (f"learner stage `{s}` (its /metrics)", f"{v:.1f}") for s, v in timing.stage_seconds.items()
    ]
    lines = ["| measurement | seconds |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    gates = "opened (latency only)" if args.open_gates else "as configured"
    lines.append(
        f"\nN = {timing.comparisons} comparisons, version {timing.version or '-'}, outcome "
        f"{timing.outcome}; users: {args.concurrency} concurrent, N comparisons then stop, "
        f"{args.max_tokens} max tokens; gates {gates}; learner env overrides: "
        f"{', '.join(args.learner_env) or 'none'}."
    )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(__doc__)
    add_user_options(p, comparisons=64, concurrency=4, comparisons_help="N: comparisons per cycle")
    add_max_tokens_option(
        p,
        DEMO_MAX_TOKENS,
        why="the demo's: this measures the loop the demo runs",
        aliases=("--tokens",),
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="give up after seconds")
    p.add_argument(
        "--open-gates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open the quality gates so the timing always covers a publish",
    )
    add_env_option(p, "learner")
    p.add_argument("--tiny", action="store_true", help="tiny random model (checks the script)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    p.add_argument("--json", type=Path, help="also write the raw timings here")
    return p


def main() -> int:
    args = build_parser().parse_args()
    timing = run(args)
    report = table(timing, args)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(timing.__dict__, indent=2))
    return 0 if timing.outcome == "served" else 1


if __name__ == "__main__":
    # SIGTERM and SIGHUP, like Ctrl-C, unwind through the finally blocks that stop the broker
    # and the services this started.
    from common.signals import StopSignals

    with StopSignals("the loop benchmark"):
        sys.exit(main())
