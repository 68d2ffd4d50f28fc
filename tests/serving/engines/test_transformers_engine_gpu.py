"""GPU tier: the transformers engine with ``device="cuda"`` on the tiny (lively) random model.

The decode loop keeps the model, KV cache, masks and logits on the engine's device; per-row
random generators stay on the CPU, so a seeded answer draws the same numbers on any device.
Skipped with its reason (``-ra``) on machines without CUDA (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.events import ChatMessage
from serving.engines.protocol import BASE
from serving.engines.transformers_engine import TransformersEngine
from tests.support.engines import req

pytestmark = [pytest.mark.gpu, pytest.mark.anyio]


@pytest.fixture
async def cuda_engine(lively_model_dir: Path) -> AsyncIterator[TransformersEngine]:
    eng = TransformersEngine(lively_model_dir, device="cuda", max_batch_size=16, max_queue=32)
    await eng.start()
    yield eng
    await eng.stop()


def _greedy_generate(model_dir: Path, prompt: str, max_new_tokens: int) -> list[int]:
    """Reference answer: plain ``model.generate`` (greedy, batch 1) on the same device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to("cuda").eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    batch = tokenizer(ids, return_tensors="pt", add_special_tokens=False).to("cuda")
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    tokens: list[int] = out[0, batch["input_ids"].shape[1] :].tolist()
    return (
        tokens[: tokens.index(tokenizer.eos_token_id)]
        if tokenizer.eos_token_id in tokens
        else tokens
    )


async def test_answers_a_chat_request_on_cuda(
    cuda_engine: TransformersEngine, lively_model_dir: Path
) -> None:
    model = cuda_engine._adapters.model  # type: ignore[union-attr]
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    messages = [ChatMessage(role="user", content="What is two plus two?")]
    outputs = await cuda_engine.generate(req("What is two plus two?", max_tokens=10))
    assert len(outputs) == 1
    answer = outputs[0]
    assert answer.text and answer.completion_tokens > 0
    assert answer.prompt_tokens == cuda_engine.count_prompt_tokens(messages)
    assert answer.adapter == BASE
    expected = _greedy_generate(lively_model_dir, "What is two plus two?", 10)
    tokenizer = cuda_engine._tokenizer
    assert answer.text == tokenizer.decode(expected, skip_special_tokens=True)


async def test_sampled_batches_and_adapters_on_cuda(
    cuda_engine: TransformersEngine, adapter_dirs: dict[str, Path]
) -> None:
    await cuda_engine.load_adapter("a@v1", adapter_dirs["a@v1"])
    await cuda_engine.load_adapter("b@v1", adapter_dirs["b@v1"])
    prompts = ["Hello there", "What is two plus two?", "Tell me about the fox.", "Answer briefly."]
    adapters = [BASE, "a@v1", "b@v1"]
    requests = [
        req(p, adapter=adapters[i % 3], n=2, temperature=1.0, top_p=0.9, seed=i, max_tokens=8)
        for i, p in enumerate(prompts)
    ]
    first = await asyncio.gather(*(cuda_engine.generate(r) for r in requests))
    again = await asyncio.gather(*(cuda_engine.generate(r) for r in requests))
    assert [[o.text for o in a] for a in first] == [[o.text for o in a] for a in again]
    assert all(len(a) == 2 and all(o.completion_tokens > 0 for o in a) for a in first)
    assert cuda_engine.stats().max_batch_size_seen > 1
    greedy = {
        name: (await cuda_engine.generate(req("Hello there", adapter=name)))[0].text
        for name in adapters
    }
    assert len(set(greedy.values())) > 1, greedy  # the adapters act on the GPU as well
