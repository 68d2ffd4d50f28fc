"""Noisy-neighbour benchmark: serving throughput quietly and beside CPU-bound processes at nice 19.

The failure it measures: torch runs its CPU kernels on OpenMP threads, one per CPU by default,
and every parallel region ends at a barrier where the finished threads spin (GNU libgomp, which
torch's wheels use, busy-waits 300,000 spins before sleeping unless ``OMP_WAIT_POLICY`` says
otherwise: https://gcc.gnu.org/onlinedocs/libgomp/GOMP_005fSPINCOUNT.html). When the kernel
preempts one thread for a neighbour, all the others spin at the next barrier until it runs
again, so a neighbour at the lowest priority still takes far more than its share: on this
2-core machine a compiler at nice 19 beside ``serve`` took the engine from 127 to 7.5 tokens/s.
The same happens in a pod whose CPU quota is smaller than the threads torch starts (one per core
of the node), which is why ``serve`` now sizes its threads from its affinity and quota
(``common/cpu_budget.py``, ``SERVING_TORCH_THREADS``). Two mitigations to compare with
``--torch-threads`` and ``--omp-wait-policy``: fewer threads than CPUs (a preempted peer is
less likely), and ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once and yield the CPU
to the thread they wait for; https://gcc.gnu.org/onlinedocs/libgomp/OMP_005fWAIT_005fPOLICY.html).

One run: ``serve`` (transformers engine, embedded SmolLM2-135M, float32) in its own process as
the serving benchmark starts it (:func:`bench.serving_load.start_server`), a warm-up, then C
closed-loop pair clients (default 32) for S seconds (default 30) quietly, then the same with
one ``nice -n 19 python -c "while True: pass"`` per CPU beside it. Tokens/s = completion tokens
of the requests / wall time until every client finished the request it had in flight when the
S seconds ended. Target: the noisy figure at least 60 % of the quiet one in the same run. The
report (the command, date, machine, threads setting and torch's thread count, a table and the
ratio) is appended to ``bench/results/noisy_neighbour.md`` (``--out``).

Usage: ``.venv/bin/python -m bench.noisy_neighbour [--seconds 30] [--clients 32]
[--torch-threads 0] [--omp-wait-policy PASSIVE]``; run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import RESULTS
from bench.bench_serving import add_bench_max_tokens
from bench.serving_load import LoadResult, concurrent_load, make_prompts, start_server
from common.cli import command_parser

NEIGHBOUR_CODE = "while True: pass"
TARGET_RATIO = 0.60
TITLE = "# Noisy neighbour: serving beside CPU-bound processes at nice 19"


@dataclass(frozen=True)
class Phase:
    """One timed load: its name, completion tokens, wall seconds, requests, p50, errors."""

    name: str
    tokens: int
    wall: float
    requests: int
    p50: float
    errors: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall if self.wall > 0 else 0.0

    @classmethod
    def of(cls, name: str, load: LoadResult) -> Phase:
        return cls(name, load.tokens, load.wall, len(load.latencies), load.pct(0.5), load.errors)


def ratio(quiet: Phase, noisy: Phase) -> float:
    """Noisy throughput over quiet (NaN when the quiet phase produced nothing)."""
    if quiet.tokens_per_second <= 0:
        return math.nan
    return noisy.tokens_per_second / quiet.tokens_per_second


def verdict(value: float, target: float = TARGET_RATIO) -> str:
    if math.isnan(value):
        return "not measured (the quiet phase produced no tokens)"
    return f"target >= {target:.2f}: {'met' if value >= target else 'NOT met'}"


@dataclass(frozen=True)
class RunInfo:
    """What the report says about the run besides its figures."""

    when: datetime
    command: str
    machine: str
    torch_threads_setting: int
    torch_threads: int
    omp_wait_policy: str
    neighbours: int
    clients: int
    seconds: float
    max_tokens: int


def report(info: RunInfo, quiet: Phase, noisy: Phase) -> str:
    """One run's Markdown: the ``Run ...`` line bench.summary reads, the set-up, the table."""
    value = ratio(quiet, noisy)
    setting = info.torch_threads_setting or "0 (automatic)"
    lines = [
        f"Run {info.when:%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.noisy_neighbour "
        f"{info.command}`".rstrip()
        + ".",
        f"Machine: {info.machine}.",
        f"serve: transformers engine, SmolLM2-135M (embedded), float32; SERVING_TORCH_THREADS "
        f"{setting} -> torch threads {info.torch_threads}; OMP_WAIT_POLICY "
        f"{info.omp_wait_policy or 'unset (libgomp default)'}. Load: {info.clients} closed-loop "
        f"pair clients, max_tokens {info.max_tokens}, {info.seconds:.0f} s per phase. Neighbours: "
        f'{info.neighbours} x `nice -n 19 python -c "{NEIGHBOUR_CODE}"`.',
        "",
        "| phase | tokens/s | tokens | wall s | requests | p50 s | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in (quiet, noisy):
        lines.append(
            f"| {phase.name} | {phase.tokens_per_second:.1f} | {phase.tokens} | "
            f"{phase.wall:.1f} | {phase.requests} | {phase.p50:.2f} | {phase.errors} |"
        )
    lines += ["", f"Noisy / quiet: **{value:.2f}** ({verdict(value)})."]
    return "\n".join(lines) + "\n"


def append_report(path: Path, text: str) -> None:
    """Add a run to the results file (created with its title); earlier runs stay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.is_file() else ""
    head = old.rstrip("\n") + "\n\n" if old.strip() else TITLE + "\n\n"
    path.write_text(head + text)


def serve_env(torch_threads: int, omp_wait_policy: str | None) -> dict[str, str]:
    """The settings this benchmark gives ``serve`` on top of the serving benchmark's."""
    env = {"SERVING_TORCH_THREADS": str(torch_threads)}
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    return env


def for_seconds(seconds: float) -> Callable[[], Awaitable[str]]:
    """A ``during`` for :func:`concurrent_load`: clients keep sending for ``seconds``."""

    async def wait() -> str:
        await asyncio.sleep(seconds)
        return f"{seconds:.0f} s"

    return wait


def timed_load(port: int, prompts: list[str], tokens: int, seconds: float) -> LoadResult:
    return asyncio.run(concurrent_load(port, prompts, tokens, during=for_seconds(seconds)))


def start_neighbours(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", NEIGHBOUR_CODE])
        for _ in range(count)
    ]


def stop_neighbours(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def measure(args: argparse.Namespace) -> tuple[Phase, Phase]:
    """``serve`` started, warmed up, then loaded quietly and beside the neighbours."""
    from common.embedded_model import materialize_embedded_model
    from devtools.broker import DevBroker, free_port
    from loop.services import wait_ready

    materialize_embedded_model()
    prompts = make_prompts(args.clients)
    with tempfile.TemporaryDirectory() as tmp, DevBroker() as broker:
        port = free_port()
        env = serve_env(args.torch_threads, args.omp_wait_policy)
        proc = start_server(port, broker.bootstrap, Path(tmp), 2 * args.clients, extra_env=env)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, timeout=300)
            timed_load(port, prompts, args.max_tokens, args.warmup)
            quiet = Phase.of("quiet", timed_load(port, prompts, args.max_tokens, args.seconds))
            neighbours = start_neighbours(args.neighbours)
            try:
                load = timed_load(port, prompts, args.max_tokens, args.seconds)
            finally:
                stop_neighbours(neighbours)
            noisy = Phase.of(f"{args.neighbours} neighbours at nice 19", load)
        finally:
            proc.stop(timeout=120)
    return quiet, noisy


def torch_thread_count(setting: int) -> int:
    """The count ``serve`` sets on this machine with this environment (common.cpu_budget)."""
    from common.cpu_budget import automatic_threads

    return setting if setting > 0 else automatic_threads()[0]


def build_parser() -> argparse.ArgumentParser:
    from common.cpu_budget import available_cpus

    parser = command_parser(__doc__, prog="python -m bench.noisy_neighbour")
    parser.add_argument("--clients", type=int, default=32, help="concurrent pair clients")
    add_bench_max_tokens(parser)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=10.0, help="load before the phases")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="serve's SERVING_TORCH_THREADS (0 = automatic: its affinity and CPU quota)",
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["PASSIVE", "ACTIVE"],
        default=None,
        help="OMP_WAIT_POLICY for serve (default: unset, libgomp spins then sleeps)",
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        default=available_cpus(),
        help="CPU-bound processes at nice 19 in the noisy phase (one per CPU)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "noisy_neighbour.md", help="results file to append to"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.bench_all import command_line, machine

    args = build_parser().parse_args(argv)
    quiet, noisy = measure(args)
    info = RunInfo(
        when=datetime.now(UTC),
        command=command_line(),
        machine=machine(),
        torch_threads_setting=args.torch_threads,
        torch_threads=torch_thread_count(args.torch_threads),
        omp_wait_policy=args.omp_wait_policy or "",
        neighbours=args.neighbours,
        clients=args.clients,
        seconds=args.seconds,
        max_tokens=args.max_tokens,
    )
    text = report(info, quiet, noisy)
    print(text)
    append_report(args.out, text)
    return 0


if __name__ == "__main__":
    # SIGTERM and SIGHUP, like Ctrl-C, unwind through the finally blocks that stop the
    # neighbours, the broker and serve.
    from common.signals import StopSignals

    with StopSignals("the noisy-neighbour benchmark"):
        sys.exit(main())
