"""Every trainer option documents itself (TRL-style help strings) and bad inputs fail early."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from learner.evaluate import EvalConfig
from learner.ppo.config import PPOConfig
from learner.ppo.train import run_ppo
from learner.rm.config import RewardConfig
from learner.rm.train import train_reward_model
from learner.sft.config import SFTConfig
from tests.learner.ml.helpers import separable_comparisons, user


@pytest.mark.parametrize("config", [RewardConfig, PPOConfig, SFTConfig, EvalConfig])
def test_every_field_has_a_help_string(config: type) -> None:
    for f in dataclasses.fields(config):
        assert f.metadata.get("help", "").strip(), f"{config.__name__}.{f.name} has no help"


def test_reward_training_refuses_an_empty_training_split(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no comparisons"):
        train_reward_model(tiny_model_dir, [], RewardConfig(), tmp_path)
    with pytest.raises(ValueError, match="nothing left to train on"):
        train_reward_model(
            tiny_model_dir, separable_comparisons(4), RewardConfig(eval_fraction=1.0), tmp_path
        )


def test_ppo_refuses_bad_options(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = [user("hi")]
    for bad in (
        PPOConfig(kl_estimator="k2"),
        PPOConfig(temperature=0.0),
        PPOConfig(batch_size=2, mini_batch_size=5),  # 2 prompts x 2 samples = 4 rows < 5
        PPOConfig(advantage_estimator="vtrace"),
        PPOConfig(samples_per_prompt=1),  # RLOO needs a second sample per prompt
    ):
        with pytest.raises(ValueError):
            run_ppo(tiny_model_dir, tmp_path, prompts, bad, tmp_path)
    with pytest.raises(ValueError, match="no prompts"):
        run_ppo(tiny_model_dir, tmp_path, [], PPOConfig(), tmp_path)


def test_device_setting_resolves_and_refuses_cuda_it_does_not_have(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from learner.modeling import torch_device, wants_cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert wants_cpu("auto") and wants_cpu("cpu")
    assert torch_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        wants_cpu("cuda")
    with pytest.raises(ValueError, match="device must be"):
        wants_cpu("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not wants_cpu("auto") and wants_cpu("cpu")
    assert torch_device("cuda:1") == torch.device("cuda:1")
    assert torch_device("auto") == torch.device("cuda")
