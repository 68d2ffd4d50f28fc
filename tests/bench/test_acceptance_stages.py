"""The acceptance run's stage report: each stage trained alone by the learner's own commands,
published, waited for and evaluated (here with the fake trainers and a stand-in evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.acceptance_stages import (
    StageResult,
    markdown,
    published_version,
    stage_commands,
    stage_contributions,
)
from tests.events import correction, pair, pref
from tests.learner.factories import Feeder, new_store


class FakeReport:
    def __init__(self, win_rate: float) -> None:
        self.win_rate, self.n = win_rate, 10

    def interval(self) -> tuple[float, float]:
        return self.win_rate - 0.1, self.win_rate + 0.1

    @property
    def a(self) -> Any:
        return _Side(40.0)

    @property
    def b(self) -> Any:
        return _Side(70.0)

    def to_dict(self) -> dict[str, Any]:
        return {"win_rate": self.win_rate}


class _Side:
    def __init__(self, words: float) -> None:
        self.words = words

    def summary(self) -> dict[str, Any]:
        return {"mean_words": self.words}


def fake_learner_env(tmp_path: Path) -> dict[str, str]:
    """The learner commands' settings: the store under tmp_path, fake trainers, no Kafka."""
    from tests.learner.test_cycle import fake_model_dir

    return {
        "LEARNER_DATA_DIR": str(tmp_path / "data"),
        "LEARNER_ADAPTER_STORE": str(tmp_path / "adapters"),
        "LEARNER_MODEL_DIR": str(fake_model_dir(tmp_path / "model")),
        "LEARNER_TRAINERS": "fake",
        "LEARNER_PUBLISH_TO_KAFKA": "false",
    }


def test_published_version_reads_the_command_output() -> None:
    assert published_version('{"adapter_dir": "x"}\npublished policy@v7\n') == "policy@v7"
    with pytest.raises(RuntimeError, match="published nothing"):
        published_version('{"adapter_dir": "x"}\n')


def test_stage_commands_repeat_the_last_cycles_reward_model_and_iterations(
    tmp_path: Path,
) -> None:
    ckpt = {"reward_adapter": "/rm/v1", "metrics": {"ppo/step": 16.0}}
    commands = stage_commands(ckpt, tmp_path)
    assert commands["SFT only"][:2] == ["sft", "--publish"]
    ppo = commands["PPO only"]
    assert ppo[ppo.index("--reward-adapter") + 1] == "/rm/v1"
    assert ppo[ppo.index("--steps") + 1] == "16"
    assert "--init-adapter" not in ppo  # from the base, not from the SFT adapter
    with pytest.raises(ValueError, match="no reward model"):
        stage_commands({"metrics": {}}, tmp_path)


def test_each_stage_alone_is_trained_published_and_evaluated(tmp_path: Path) -> None:
    store = new_store(tmp_path / "data")
    feeder = Feeder(store)
    for i in range(10):
        feeder.feed(pair(f"p{i}", prompt=f"question {i}"), pref(f"p{i}"))
    feeder.feed(correction("p0-r0", "A shorter answer."))
    store.close()
    reward = tmp_path / "rm"
    reward.mkdir()
    env = fake_learner_env(tmp_path)
    evaluated: list[tuple[str, str]] = []
    waited: list[str] = []

    def evaluate(version: str, name: str) -> FakeReport:
        evaluated.append((version, name))
        return FakeReport(0.6)

    ckpt = {"reward_adapter": str(reward), "metrics": {"ppo/step": 3.0}}
    results = stage_contributions(
        ckpt, env, tmp_path / "stages", evaluate, waited.append, lambda _: None
    )
    assert [(r.stage, r.version) for r in results] == [
        ("SFT only", "policy@v1"),
        ("PPO only", "policy@v2"),
    ]
    assert waited == ["policy@v1", "policy@v2"]
    assert evaluated == [("policy@v1", "eval-sft-only"), ("policy@v2", "eval-ppo-only")]
    from learner.publish import AdapterStore

    adapters = AdapterStore(str(tmp_path / "adapters"), "policy")
    assert adapters.manifest(1).config["sft"] is not None
    ppo = adapters.manifest(2)
    assert ppo.config["ppo_init"] == "base" and ppo.metrics["step"] == 3.0
    assert (tmp_path / "stages" / "stages.json").is_file()
    table = "\n".join(
        markdown(StageResult("SFT + PPO (published)", "policy@v3", FakeReport(0.8)), results)
    )
    assert "| PPO only | policy@v2 | 0.600 [0.500, 0.700] | 10 | 40.0 / 70.0 |" in table
    assert "| SFT + PPO (published) | policy@v3 | 0.800" in table


def test_a_stage_that_cannot_be_trained_is_reported_not_fatal(tmp_path: Path) -> None:
    store = new_store(tmp_path / "data")
    Feeder(store).feed(pair("p0", prompt="question"), pref("p0"))  # votes, no correction
    store.close()
    env = fake_learner_env(tmp_path)
    (tmp_path / "rm").mkdir()
    ckpt = {"reward_adapter": str(tmp_path / "rm"), "metrics": {"ppo/step": 2.0}}
    results = stage_contributions(
        ckpt, env, tmp_path / "stages", lambda v, n: FakeReport(0.5), lambda v: None, print
    )
    sft, ppo = results
    assert sft.report is None and "learner sft exited 1" in sft.note
    assert "| SFT only | - | not trained: learner sft exited 1" in sft.row()
    assert ppo.version == "policy@v1" and ppo.report is not None
