"""Training stages launched as separate (multi-process) jobs: ``LEARNER_TRAIN_LAUNCHER``.

The daemon stays one process (the single writer of store, checkpoint and adapter store); each
stage runs as ``<launcher> -m learner.trainers.stage_worker REQUEST`` and hands its outcome back
as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from learner.data import SFTExample
from learner.trainers import PPOJob, RewardJob, SFTJob
from learner.trainers.launched import LaunchedTrainers, StageLaunchError, launcher_from_setting
from learner.trainers.wire import (
    LaunchedJob,
    decode_comparisons,
    decode_examples,
    decode_job,
    encode_comparisons,
    encode_examples,
    encode_job,
)
from tests.learner.ml.helpers import TWO_CPU_PROCESSES, separable_comparisons, user

REPO = Path(__file__).resolve().parents[3]


def test_stage_inputs_survive_the_json_round_trip() -> None:
    comparisons = separable_comparisons(4)
    assert decode_comparisons(encode_comparisons(comparisons)) == comparisons
    examples = [SFTExample(user("Say hi."), "Hi!")]
    assert decode_examples(encode_examples(examples)) == examples


def test_every_launched_job_survives_the_json_round_trip(tmp_path: Path) -> None:
    prompt = user("Say hi.")
    jobs: dict[str, LaunchedJob] = {
        "reward": RewardJob(tmp_path, separable_comparisons(2), tmp_path / "r", [], 1),
        "ppo": PPOJob(tmp_path, tmp_path / "rm", [prompt], tmp_path / "p", None, 3),
        "sft": SFTJob(tmp_path, [SFTExample(prompt, "Hi!")], tmp_path / "s", tmp_path / "init"),
    }
    for stage, job in jobs.items():
        assert decode_job(stage, json.loads(json.dumps(encode_job(job)))) == job
    with pytest.raises(ValueError, match="unknown stage"):
        decode_job("evaluate", {})


def test_launcher_setting_is_split_like_a_shell_and_python_is_this_interpreter() -> None:
    assert launcher_from_setting("accelerate launch --num_processes 4") == [
        "accelerate",
        "launch",
        "--num_processes",
        "4",
    ]
    assert launcher_from_setting("python -X dev") == [sys.executable, "-X", "dev"]


def _trainers(launcher: list[str]) -> LaunchedTrainers:
    reward = {"num_epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "eval_fraction": 0.25}
    return LaunchedTrainers(launcher, reward, {}, {}, {}, 0)


@pytest.fixture
def child_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def reward_out(tmp_path: Path) -> Path:
    """An empty output directory for one reward stage."""
    out = tmp_path / "reward"
    out.mkdir()
    return out


@pytest.mark.e2e
@pytest.mark.usefixtures("child_env")
def test_reward_stage_trains_on_two_processes_and_reports_back(
    tiny_model_dir: Path, reward_out: Path
) -> None:
    job = RewardJob(tiny_model_dir, separable_comparisons(32), reward_out)
    outcome = _trainers(TWO_CPU_PROCESSES).reward(job)
    assert outcome.config["world_size"] == 2
    assert (outcome.adapter_dir / "adapter_model.safetensors").is_file()
    assert 0.0 <= outcome.metrics["accuracy"] <= 1.0
    # 24 training comparisons sharded over 2 ranks, batch 4, 2 epochs: 3 steps per epoch
    # (one process would take 6 per epoch).
    assert [h["step"] for h in outcome.history] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert outcome.config["batch_size"] == 4


@pytest.mark.usefixtures("child_env")
def test_a_failing_launch_raises_instead_of_inventing_a_result(
    tiny_model_dir: Path, reward_out: Path
) -> None:
    bad = _trainers([sys.executable, "-c", "import sys; sys.exit(3)", "--"])
    with pytest.raises(StageLaunchError, match="exited with 3"):
        bad.reward(RewardJob(tiny_model_dir, separable_comparisons(4), reward_out))
    assert os.listdir(reward_out) == ["request.json"]
