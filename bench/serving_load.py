"""The serving benchmark's HTTP side: the prompts and the adapter every measurement shares,
``serve`` started in its own process as deployed (:mod:`loop.services`), and the load sent to it
(closed-loop pair clients, a hot swap under load, sequential requests at idle, the event
logger's counts)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import REPO
from loop.processes import ManagedProcess
from loop.services import serving_env, start_serving

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


def start_server(
    port: int,
    bootstrap: str,
    workdir: Path,
    batch: int,
    engine: str = "transformers",
    store: Path | None = None,
    dtype: str = "float32",
    extra_env: dict[str, str] | None = None,
) -> ManagedProcess:
    """``serve`` in its own process; its spool, adapter cache and log under ``workdir``;
    ``extra_env`` adds to (or overrides) its environment (a benchmark's own settings)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = serving_env(
        model_dir="embedded",
        bootstrap=bootstrap,
        store=str(store or workdir / "adapters"),
        spool_dir=workdir / "spool",
        adapter_cache_dir=workdir / "adapter-cache",
        api_key=API_KEY,
        admin_token=ADMIN,
    ) | {
        "SERVING_ENGINE": engine,
        "SERVING_DTYPE": dtype,
        "SERVING_MAX_BATCH_SIZE": str(batch),
        "SERVING_UNREQUESTED_PAIR_SHARE": "0",
        # Each engine's server starts clean: the previous server's adapter.promoted events on
        # the shared broker must not promote its adapter here (the bench loads it by HTTP).
        "SERVING_ADAPTER_FOLLOW_TOPIC": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.update(extra_env or {})
    args = ("--port", str(port), "--log-level", "warning")
    return start_serving(env, workdir / "serve.log", args, cwd=REPO)


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
