"""create_engine picks the engine named by the settings, without loading a model."""

from __future__ import annotations

import asyncio
from pathlib import Path

from serving.engines import create_engine
from serving.engines.fake import FakeEngine
from serving.engines.protocol import BASE
from serving.engines.transformers_engine import TransformersEngine
from serving.settings import ServingSettings
from tests.support.engines import req


def test_transformers_from_settings(tiny_model_dir: Path) -> None:
    settings = ServingSettings(
        engine="transformers",
        model_dir=str(tiny_model_dir),
        max_batch_size=8,
        dtype="bfloat16",
        kv_cache_budget_mib=64.0,
        prefill_chunk_tokens=32,
    )
    engine = create_engine(settings)
    assert type(engine) is TransformersEngine
    assert engine.model_dir == tiny_model_dir
    assert engine.max_batch_size == 8
    assert engine.max_queue == 32  # four batches, the default
    assert engine.dtype == "bfloat16" and engine.device == "cpu"
    assert engine.kv_cache_budget_mib == 64.0
    assert engine.prefill_chunk_tokens == 32
    assert engine.loaded_adapters() == []  # nothing loaded until start()


def test_fake_from_settings(tiny_model_dir: Path) -> None:
    settings = ServingSettings(
        engine="fake", model_dir=str(tiny_model_dir), fake_token_delay_seconds=0.001
    )
    engine = create_engine(settings)
    assert type(engine) is FakeEngine and engine.name == "fake"
    assert engine.token_delay == 0.001

    async def answer() -> str:
        await engine.start()
        try:
            [output] = await engine.generate(req("Hello there"))
        finally:
            await engine.stop()
        assert output.adapter == BASE and output.completion_tokens >= 1
        return output.text

    assert asyncio.run(answer())


def test_vllm_from_settings_reserves_the_learner_s_rank_and_a_slot_per_kept_version(
    tiny_model_dir: Path,
) -> None:
    from serving.engines.vllm_engine import VLLMEngine

    settings = ServingSettings(
        engine="vllm", model_dir=str(tiny_model_dir), max_batch_size=16, adapter_keep_loaded=3
    )
    engine = create_engine(settings)  # vLLM itself is imported only at start()
    assert type(engine) is VLLMEngine
    assert engine.max_lora_rank == 8  # vLLM's CPU LoRA cost follows the reserved rank
    assert engine.max_loras == 4  # serving, previous, canary and the base's identity adapter
    assert engine.max_batch_size == 16
    wider = create_engine(settings.model_copy(update={"max_lora_rank": 16}))
    assert isinstance(wider, VLLMEngine) and wider.max_lora_rank == 16


def test_vllm_memory_settings_reach_the_engine(tiny_model_dir: Path) -> None:
    from serving.engines.vllm_engine import VLLMEngine

    settings = ServingSettings(engine="vllm", model_dir=str(tiny_model_dir))
    default = create_engine(settings)
    assert isinstance(default, VLLMEngine)
    assert default.memory_fraction == 0.2 and default.kv_cache_bytes is None
    gpu = create_engine(
        settings.model_copy(update={"vllm_memory_fraction": 0.9, "vllm_kv_cache_mib": 512.0})
    )
    assert isinstance(gpu, VLLMEngine)
    assert gpu.memory_fraction == 0.9 and gpu.kv_cache_bytes == 512 << 20
