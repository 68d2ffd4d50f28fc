"""The vLLM engine's settings reach vLLM's engine arguments (no vLLM needed: ``engine_args`` is
the plain dict ``start`` hands to ``AsyncEngineArgs``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.engines.vllm_engine import VLLMEngine, engine_args
from serving.settings import ServingSettings


def args_from_env(monkeypatch: pytest.MonkeyPatch, model: Path, **env: str) -> dict[str, object]:
    monkeypatch.setenv("SERVING_MODEL_DIR", str(model))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return engine_args(VLLMEngine.from_settings(ServingSettings(engine="vllm")))


def test_defaults(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    args = args_from_env(monkeypatch, tiny_model_dir)
    assert args["model"] == str(tiny_model_dir)
    assert args["max_model_len"] == 2048
    assert args["tensor_parallel_size"] == 1
    assert args["max_loras"] == 3 + 1  # adapter_keep_loaded versions + the identity adapter
    assert args["max_lora_rank"] == 8
    assert args["gpu_memory_utilization"] == 0.2
    assert args["kv_cache_memory_bytes"] is None
    assert args["enable_lora"] is True


def test_each_setting_maps(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    args = args_from_env(
        monkeypatch,
        tiny_model_dir,
        SERVING_VLLM_MAX_MODEL_LEN="8192",
        SERVING_VLLM_TENSOR_PARALLEL_SIZE="2",
        SERVING_VLLM_MAX_LORAS="6",
        SERVING_MAX_LORA_RANK="16",
        SERVING_VLLM_MEMORY_FRACTION="0.9",
        SERVING_VLLM_KV_CACHE_MIB="512",
        SERVING_DTYPE="bfloat16",
        SERVING_MAX_BATCH_SIZE="32",
    )
    assert args["max_model_len"] == 8192
    assert args["tensor_parallel_size"] == 2
    assert args["max_loras"] == 6
    assert args["max_lora_rank"] == 16
    assert args["gpu_memory_utilization"] == 0.9
    assert args["kv_cache_memory_bytes"] == 512 << 20
    assert args["dtype"] == "bfloat16"
    assert args["max_num_seqs"] == 32


def test_unset_max_loras_follows_versions_kept(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    args = args_from_env(monkeypatch, tiny_model_dir, SERVING_ADAPTER_KEEP_LOADED="5")
    assert args["max_loras"] == 6


def test_too_few_lora_slots_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="SERVING_VLLM_MAX_LORAS=3 is less than the 4"):
        ServingSettings(engine="fake", vllm_max_loras=3)
    assert ServingSettings(engine="fake", vllm_max_loras=4).vllm_loras == 4
