"""GPU tier: the reward-model and PPO trainers on CUDA with the tiny random model.

``make_accelerator()`` asks accelerate for CUDA whenever it is present, so both trainers should
place the model there. The trainers return only files and metrics, so each test captures the
module the trainer builds (``RewardModel.create`` / ``learner.ppo.train._build``) to check where
its trained parameters live, that every one of them moved and that only the frozen base is in
bfloat16 (``base_dtype="auto"`` on a bf16-capable GPU). Skipped with its reason (``-ra``)
on machines without CUDA (tests/conftest.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import learner.ppo.train as ppo_train
from learner.modeling import trainable_parameters
from learner.ppo.config import PPOConfig
from learner.ppo.train import PPOResult, run_ppo
from learner.rm.config import RewardConfig
from learner.rm.model import HEAD_FILE, RewardModel
from learner.rm.train import RewardResult, train_reward_model
from tests.learner.ml.helpers import PPO_STEP_METRICS, PROMPTS, separable_comparisons, user

pytestmark = pytest.mark.gpu


class Captured:
    """The module a trainer built, and a CPU copy of its trainable parameters at that time."""

    def __init__(self) -> None:
        self.module: nn.Module | None = None
        self.before: dict[str, torch.Tensor] = {}

    def take(self, module: nn.Module) -> nn.Module:
        self.module = module
        self.before = {
            name: p.detach().cpu().clone() for name, p in trainable_parameters(module).items()
        }
        return module

    def check_trained_on_cuda(self) -> None:
        assert self.module is not None, "the trainer did not build its module through the hook"
        after = trainable_parameters(self.module)
        assert after.keys() == self.before.keys() and after
        off_gpu = [name for name, p in after.items() if p.device.type != "cuda"]
        assert not off_gpu, f"trained parameters not on CUDA: {off_gpu[:5]}"
        unchanged = [n for n, p in after.items() if torch.equal(p.detach().cpu(), self.before[n])]
        assert not unchanged, f"parameters did not change: {unchanged[:5]}"
        self.check_dtypes()

    def check_dtypes(self) -> None:
        """``base_dtype="auto"`` on CUDA: the frozen base in bfloat16 where the GPU supports it,
        every trained parameter (LoRA, heads) in float32 (learner.precision)."""
        assert self.module is not None
        params = list(self.module.parameters())
        assert {p.dtype for p in params if p.requires_grad} == {torch.float32}
        base = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        assert {p.dtype for p in params if not p.requires_grad} == {base}


def _finite(metrics: dict[str, float], keys: list[str]) -> None:
    bad = {k: metrics[k] for k in keys if not math.isfinite(metrics[k])}
    assert not bad, f"non-finite metrics: {bad}"


@pytest.fixture(scope="module")
def cuda_reward(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RewardResult, Captured]:
    captured = Captured()
    original: Callable[..., RewardModel] = RewardModel.create

    def create(cls: type[RewardModel], *args: Any, **kwargs: Any) -> RewardModel:
        model = original(*args, **kwargs)
        captured.take(model)
        return model

    # The Bradley-Terry loss is blind to a shared offset: without the centring term the head's
    # bias gets no gradient and could not be seen to train.
    config = RewardConfig(
        num_epochs=3,
        batch_size=8,
        learning_rate=5e-3,
        eval_fraction=0.25,
        center_rewards_coefficient=0.01,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RewardModel, "create", classmethod(create))
        result = train_reward_model(
            tiny_model_dir, separable_comparisons(32), config, tmp_path_factory.mktemp("rm-cuda")
        )
    return result, captured


def test_reward_model_trains_on_cuda(cuda_reward: tuple[RewardResult, Captured]) -> None:
    result, captured = cuda_reward
    captured.check_trained_on_cuda()
    assert result.history
    for row in result.history:
        _finite(row, ["loss", "accuracy", "margin"])
    _finite(result.metrics, ["loss", "accuracy", "margin", "reward/mean", "reward/std"])
    assert result.metrics["eval_count"] > 0
    assert (result.adapter_dir / HEAD_FILE).is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_short_ppo_run_trains_on_cuda(
    tiny_model_dir: Path,
    cuda_reward: tuple[RewardResult, Captured],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    captured = Captured()
    original = ppo_train._build

    def build(*args: Any, **kwargs: Any) -> Any:
        return captured.take(original(*args, **kwargs))

    monkeypatch.setattr(ppo_train, "_build", build)
    config = PPOConfig(
        num_steps=2,
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=2,
        max_new_tokens=6,
        learning_rate=1e-2,
    )
    result: PPOResult = run_ppo(
        tiny_model_dir, cuda_reward[0].adapter_dir, [user(p) for p in PROMPTS], config, tmp_path
    )
    captured.check_trained_on_cuda()
    assert len(result.history) == 2
    for row in result.history:
        _finite(row, PPO_STEP_METRICS)
        assert row["response/length"] > 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.value_head_path is not None and result.value_head_path.is_file()


def test_evaluation_runs_on_cuda(
    tiny_model_dir: Path,
    cuda_reward: tuple[RewardResult, Captured],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import learner.evaluate as ev

    seen: list[str] = []
    original = ev._sequence_kl

    def sequence_kl(model: Any, rollout: Any, config: Any) -> torch.Tensor:
        seen.append(rollout.input_ids.device.type)
        return original(model, rollout, config)

    monkeypatch.setattr(ev, "_sequence_kl", sequence_kl)
    config = ev.EvalConfig(max_new_tokens=6, sanity_prompts=("Say hi.",), max_repeat_fraction=1.0)
    result = ev.evaluate_policy(
        tiny_model_dir, None, cuda_reward[0].adapter_dir, [user(p) for p in PROMPTS[:4]], config
    )
    assert seen and set(seen) == {"cuda"}
    assert math.isfinite(result.kl) and math.isfinite(result.reward_gain)
