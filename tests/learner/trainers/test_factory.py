"""learner.trainers.factory: the launcher the settings ask for; PPO's KL stop follows the
learner's KL budget, its rollout engine the LEARNER_ROLLOUT_ENGINE setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from learner.settings import LearnerSettings
from learner.trainers.factory import make_trainers, ppo_overrides
from learner.trainers.launched import FSDP_CONFIG, LaunchedTrainers
from tests.learner.test_cycle import fake_model_dir

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, **overrides: Any) -> LearnerSettings:
    return LearnerSettings(
        data_dir=str(tmp_path / "data"),
        adapter_store=str(tmp_path / "adapters"),
        model_dir=str(fake_model_dir(tmp_path / "model")),
        metrics_port=0,
        **overrides,
    )


def test_kl_stop_is_the_budget_share(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kl_budget=8.0, ppo_config={"num_steps": 3})
    assert ppo_overrides(settings) == {"kl_stop": pytest.approx(4.8), "num_steps": 3}


def test_ppo_config_kl_stop_wins_and_zero_turns_it_off(tmp_path: Path) -> None:
    explicit = _settings(tmp_path, ppo_config={"kl_stop": 2.5})
    assert ppo_overrides(explicit) == {"kl_stop": 2.5}
    assert ppo_overrides(_settings(tmp_path, ppo_kl_stop_fraction=0)) == {}


def test_fraction_outside_zero_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ppo_kl_stop_fraction"):
        _settings(tmp_path, ppo_kl_stop_fraction=1.5)


@pytest.mark.parametrize(
    ("distributed", "config_file"), [("ddp", []), ("fsdp", ["--config_file", str(FSDP_CONFIG)])]
)
def test_launched_stages_take_the_fsdp_config_only_when_sharding(
    tmp_path: Path, distributed: str, config_file: list[str]
) -> None:
    launcher = "accelerate launch --num_processes 2"
    trainers = make_trainers(_settings(tmp_path, train_launcher=launcher, distributed=distributed))
    assert isinstance(trainers, LaunchedTrainers)
    assert trainers.launcher == ["accelerate", "launch", *config_file, "--num_processes", "2"]


def test_rollout_engine_setting_reaches_ppo_unless_ppo_config_names_one(tmp_path: Path) -> None:
    assert "rollout_engine" not in ppo_overrides(_settings(tmp_path))  # auto: PPOConfig's default
    chosen = _settings(tmp_path, rollout_engine="generate")
    assert ppo_overrides(chosen)["rollout_engine"] == "generate"
    explicit = _settings(tmp_path, rollout_engine="generate", ppo_config={"rollout_engine": "vllm"})
    assert ppo_overrides(explicit)["rollout_engine"] == "vllm"


def test_an_unknown_rollout_engine_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rollout_engine"):
        _settings(tmp_path, rollout_engine="sglang")
