"""The memory plan's arithmetic on tiny configs: meta-built parameter counts against the closed
forms, activation and cache formulas, the two layouts, the CLI and the measured step."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from transformers import LlamaConfig, Qwen2Config

from bench import memory_estimate as est
from bench import memory_plan
from bench.memory_measure import reward_step
from bench.memory_stages import PlanOptions, plan
from learner.ppo.config import PPOConfig
from learner.rm.config import RewardConfig

SHAPE = dict(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def configs() -> list[Any]:
    return [
        LlamaConfig(**SHAPE, tie_word_embeddings=True),
        LlamaConfig(**SHAPE, tie_word_embeddings=False, attention_bias=True),
        Qwen2Config(**SHAPE, tie_word_embeddings=True),
    ]


@pytest.mark.parametrize("config", configs(), ids=["llama-tied", "llama-bias", "qwen2"])
def test_meta_built_counts_match_the_closed_forms(config: Any) -> None:
    shape = est.ModelShape.of(config)
    assert est.built_base_params(config) == est.base_params(shape)
    for options in (PPOConfig(), RewardConfig(lora_layers=2), RewardConfig(lora_r=4)):
        assert est.built_lora_params(config, options) == est.lora_params(shape, options)


def test_lora_on_the_last_layers_only() -> None:
    shape = est.ModelShape.of(configs()[0])
    assert est.lora_params(shape, RewardConfig(lora_layers=1)) * 4 == est.lora_params(
        shape, PPOConfig()
    )


def test_activation_formulas() -> None:
    shape = est.ModelShape.of(configs()[0])  # H 32, 4 heads
    # Korthikanti et al. eq. 1 in 16 bits: B*T*(34H + 5aT)
    assert est.layer_activation_bytes(shape, 2, 8, 2) == 2 * 8 * (34 * 32 + 5 * 4 * 8)
    assert est.layer_activation_bytes(shape, 2, 8, 4) == 2 * 2 * 8 * (34 * 32 + 5 * 4 * 8)
    assert est.layer_activation_bytes(shape, 2, 8, 2, "sdpa") == 2 * 8 * 34 * 32
    full = est.layer_activation_bytes(shape, 2, 8, 2)
    assert est.trained_activation_bytes(shape, 3, 2, 8, 2) == 3 * full
    # checkpointing: each layer's 16-bit input, plus one layer recomputed
    assert est.trained_activation_bytes(shape, 3, 2, 8, 2, True) == 3 * 2 * 8 * 32 * 2 + full
    assert est.kv_cache_bytes(shape, 2, 8, 2) == 2 * 4 * 2 * 8 * 2 * 8 * 2  # kv heads 2, dim 8
    assert est.logits_bytes(2, 8, 320, 2) == 2 * 8 * 320 * 6
    assert est.adam_bytes(10, master_copy=False) == 80
    assert est.adam_bytes(10, master_copy=True) == 120


def test_one_base_halves_the_weights_of_ppo_and_evaluation() -> None:
    config = configs()[0]
    base = est.built_base_params(config)
    rows = {(p.stage, p.layout): p for p in plan(config, base, PlanOptions(dtype_bytes=2))}
    for stage in ("PPO", "evaluation"):
        assert rows[(stage, "base per model")].weights == 2 * base * 2
        assert rows[(stage, "one base")].weights == base * 2
    for stage in ("SFT", "reward model"):
        separate = rows[(stage, "base per model")]
        assert separate == replace(rows[(stage, "one base")], layout="base per model")
    ppo = rows[("PPO", "one base")]
    trainable = est.built_lora_params(config, PPOConfig()) + config.hidden_size + 1
    assert ppo.gradients == trainable * 4
    assert ppo.optimiser == trainable * 8
    assert rows[("evaluation", "base per model")].optimiser == 0
    assert ppo.sharded(4) < ppo.total


@pytest.mark.parametrize("config", configs()[:2], ids=["tied", "untied"])
def test_fsdp_column_shards_what_learner_sharding_shards(config: Any) -> None:
    """Prepared states / GPUs; with a base per model PPO's reward model (the second base) whole
    on each GPU, on one base nothing replicated; the root unit plus two decoder layers whole on
    each GPU; evaluation (the daemon's, one process) unsharded."""
    base = est.built_base_params(config)
    rows = {(p.stage, p.layout): p for p in plan(config, base, PlanOptions(dtype_bytes=2))}
    embeddings = config.vocab_size * config.hidden_size
    root = embeddings * (1 if config.tie_word_embeddings else 2) + config.hidden_size
    working = (root + 2 * (base - root) // config.num_hidden_layers) * 2
    rm = rows[("reward model", "one base")]
    states = rm.weights + rm.lora + rm.gradients + rm.optimiser
    assert rm.sharded(4) == -(-states // 4) + working + rm.activations
    ppo, shared = rows[("PPO", "base per model")], rows[("PPO", "one base")]
    # The second base and the reward model's frozen LoRA and head (LoRA + heads - trained).
    assert ppo.replicated == base * 2 + ppo.lora - ppo.gradients
    assert shared.replicated == 0
    for layout in ("base per model", "one base"):
        evaluation = rows[("evaluation", layout)]
        assert evaluation.sharded(4) == evaluation.total


def test_cli_writes_the_table(tmp_path: Path) -> None:
    model = tmp_path / "tiny"
    model.mkdir()
    configs()[0].save_pretrained(model)
    out = tmp_path / "plan.md"
    assert memory_plan.main(["--config", str(model), "--dtype", "float32", "--out", str(out)]) == 0
    text = out.read_text()
    assert "### tiny" in text and "| PPO | one base | 1 |" in text and "float32" in text


def test_measured_step_reports_a_peak(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = reward_step(tiny_model_dir, tmp_path / "out")
    assert result["peak"] >= result["baseline"] > 0
    assert json.loads((tmp_path / "out" / "adapter" / "reward_norm.json").read_text())
