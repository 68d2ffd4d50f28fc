"""LEARNER_BASE_DTYPE reaches every stage's config, in-process and through a launch request;
a stage's LEARNER_*_CONFIG override wins, as it does for the device."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from learner import evaluate as ev
from learner.trainers.factory import make_trainers
from learner.trainers.launched import LaunchedTrainers, StageLaunchError
from learner.trainers.protocol import EvalJob, PPOJob, RewardJob, SFTJob
from learner.trainers.stage_worker import run_request
from learner.trainers.wire import encode_job
from tests.learner.factories import eval_result
from tests.learner.trainers.test_factory import _settings

pytestmark = pytest.mark.unit


def _trained(seen: dict[str, Any], stage: str) -> Any:
    """A stand-in trainer recording the stage config it is given."""

    def train(*args: Any, **kwargs: Any) -> Any:
        seen[stage] = next(a for a in args if hasattr(a, "base_dtype"))
        return SimpleNamespace(adapter_dir=Path("out"), metrics={}, history=[])

    return train


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    monkeypatch.setattr("learner.rm.train.train_reward_model", _trained(configs, "reward"))
    monkeypatch.setattr("learner.ppo.train.run_ppo", _trained(configs, "ppo"))
    monkeypatch.setattr("learner.sft.train.run_sft", _trained(configs, "sft"))

    def evaluate(*args: Any) -> ev.EvalResult:
        configs["eval"] = args[-1]
        return eval_result()

    monkeypatch.setattr(ev, "evaluate_policy", evaluate)
    return configs


def test_the_setting_reaches_every_stage_and_a_stage_override_wins(
    tmp_path: Path, seen: dict[str, Any]
) -> None:
    settings = _settings(tmp_path, base_dtype="float32", sft_config={"base_dtype": "bfloat16"})
    trainers = make_trainers(settings)
    base, out = tmp_path / "base", tmp_path / "out"
    trainers.reward(RewardJob(base, [], out))
    trainers.ppo(PPOJob(base, out, [], out))
    trainers.sft(SFTJob(base, [], out))
    trainers.evaluate(EvalJob(base, out, out, [], []))
    dtypes = {stage: config.base_dtype for stage, config in seen.items()}
    assert dtypes == {"reward": "float32", "ppo": "float32", "sft": "bfloat16", "eval": "float32"}


def test_the_default_is_auto_and_other_values_are_refused(tmp_path: Path) -> None:
    assert _settings(tmp_path).base_dtype == "auto"
    with pytest.raises(ValidationError, match="base_dtype"):
        _settings(tmp_path, base_dtype="float16")


def test_a_launch_request_carries_it_and_the_worker_applies_it(
    tmp_path: Path, seen: dict[str, Any]
) -> None:
    out = tmp_path / "reward"
    out.mkdir()
    launcher = [sys.executable, "-c", "import sys; sys.exit(3)", "--"]
    trainers = LaunchedTrainers(launcher, {}, {}, {}, {}, 0, base_dtype="bfloat16")
    job = RewardJob(tmp_path / "base", [], out)
    with pytest.raises(StageLaunchError):
        trainers.reward(job)
    request = json.loads((out / "request.json").read_text())
    assert request["base_dtype"] == "bfloat16"
    run_request(request | {"job": encode_job(job)})
    assert seen["reward"].base_dtype == "bfloat16"
