"""Gradient accumulation and gradient checkpointing in every trainer, on the tiny model.

Accumulation: one optimiser step over 2 micro-batches of 2 trains the same weights as one step
over a batch of 4 (same data order: the loaders' shuffles depend on the seed, not the batch
size). Checkpointing recomputes the same activations, so it changes neither loss nor weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learner.ppo.config import PPOConfig
from learner.ppo.train import run_ppo
from learner.rm.config import RewardConfig
from learner.rm.train import RewardResult, train_reward_model
from learner.sft.config import SFTConfig
from learner.sft.train import SFTResult, run_sft
from tests.learner.ml.helpers import PROMPTS, separable_comparisons, sft_examples, user

ATOL = 1e-5


def _weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor saved in an adapter directory (LoRA, and the reward model's head)."""
    out: dict[str, torch.Tensor] = {}
    for path in sorted(adapter_dir.glob("*.safetensors")):
        out |= {f"{path.name}:{k}": v for k, v in load_file(str(path)).items()}
    assert out
    return out


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=ATOL), key


def _sft(tiny_model_dir: Path, out: Path, **options: object) -> tuple[SFTResult, dict]:
    config = SFTConfig(num_epochs=1, learning_rate=1e-2, **options)  # type: ignore[arg-type]
    result = run_sft(tiny_model_dir, sft_examples()[:4], config, out)
    return result, _weights(result.adapter_dir)


def _rm(tiny_model_dir: Path, out: Path, **options: object) -> tuple[RewardResult, dict]:
    config = RewardConfig(
        num_epochs=1,
        learning_rate=1e-2,
        eval_fraction=0.0,
        user_reliability=False,
        head_init="normal",  # a zero head would leave the LoRA without gradient in one step
        norm_sample=4,
        **options,  # type: ignore[arg-type]
    )
    result = train_reward_model(tiny_model_dir, separable_comparisons(4), config, out)
    return result, _weights(result.adapter_dir)


# Each stage's trainer on the tiny model: (result with .history, saved weights).
TRAINERS: dict[str, Callable[..., tuple[SFTResult | RewardResult, dict]]] = {
    "sft": _sft,
    "reward model": _rm,
}


@pytest.mark.parametrize("stage", TRAINERS)
def test_two_micro_batches_of_two_train_as_one_batch_of_four(
    stage: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    train = TRAINERS[stage]
    whole, whole_weights = train(tiny_model_dir, tmp_path / "a", batch_size=4)
    split, split_weights = train(
        tiny_model_dir, tmp_path / "b", batch_size=2, gradient_accumulation_steps=2
    )
    assert len(whole.history) == len(split.history) == 1
    assert abs(whole.history[0]["loss"] - split.history[0]["loss"]) < ATOL
    _assert_same(whole_weights, split_weights)


@pytest.mark.parametrize("stage", TRAINERS)
def test_checkpointing_changes_neither_loss_nor_weights(
    stage: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    train = TRAINERS[stage]
    plain, plain_weights = train(tiny_model_dir, tmp_path / "a", batch_size=2)
    ckpt, ckpt_weights = train(
        tiny_model_dir, tmp_path / "b", batch_size=2, gradient_checkpointing=True
    )
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in ckpt.history]
    _assert_same(plain_weights, ckpt_weights)


def test_ppo_with_checkpointing_and_accumulation_updates_the_policy_as_without(
    tiny_model_dir: Path,
    reward_result: RewardResult,
    sft_result: SFTResult,
    tmp_path: Path,
) -> None:
    def ppo(out: Path, checkpointing: bool) -> tuple[dict[str, float], dict]:
        config = PPOConfig(
            num_steps=1,
            batch_size=2,
            samples_per_prompt=2,
            mini_batch_size=2,
            ppo_epochs=1,
            max_new_tokens=6,
            learning_rate=1e-2,
            gradient_accumulation_steps=2,
            gradient_checkpointing=checkpointing,
        )
        prompts = [user(p) for p in PROMPTS]
        result = run_ppo(
            tiny_model_dir, reward_result.adapter_dir, prompts, config, out, sft_result.adapter_dir
        )
        return result.metrics, load_file(str(result.adapter_dir / "adapter_model.safetensors"))

    plain_metrics, plain = ppo(tmp_path / "a", checkpointing=False)
    ckpt_metrics, ckpt = ppo(tmp_path / "b", checkpointing=True)
    before = load_file(str(sft_result.adapter_dir / "adapter_model.safetensors"))
    assert not [k for k in before if torch.equal(before[k], ckpt[k])]
    assert abs(plain_metrics["loss/total"] - ckpt_metrics["loss/total"]) < ATOL
    _assert_same(plain, ckpt)


def test_checkpointing_is_on_in_training_and_lora_still_gets_gradients(
    tiny_model_dir: Path,
) -> None:
    from learner.modeling import (
        TrainOptions,
        enable_gradient_checkpointing,
        hidden_states,
        load_base_model,
        with_lora,
    )

    model = with_lora(load_base_model(tiny_model_dir), TrainOptions(), None)
    enable_gradient_checkpointing(model)
    assert model.get_base_model().is_gradient_checkpointing
    model.train()
    ids = torch.tensor([[1, 2, 3, 4]])
    hidden_states(model, ids, torch.ones_like(ids)).square().mean().backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
