"""learner.trainers.stage_worker: a launched stage's processes set torch's threads from the
learner's setting (in the request), sharing the CPU budget among the launch's local processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import common.cpu_budget
from learner.trainers.launched import LaunchedTrainers, StageLaunchError
from learner.trainers.protocol import RewardJob
from learner.trainers.stage_worker import configure_threads

pytestmark = pytest.mark.unit


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []

    def configure(setting: int, processes: int = 1) -> int:
        calls.append((setting, processes))
        return setting or 1

    monkeypatch.setattr(common.cpu_budget, "configure_torch_threads", configure)
    return calls


def test_automatic_threads_are_shared_by_the_local_processes(
    seen: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    configure_threads({"torch_threads": 0})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    configure_threads({"torch_threads": 6})
    configure_threads({})  # a request written before the setting existed
    assert seen == [(0, 4), (6, 1), (0, 1)]


def test_the_launch_request_carries_the_setting(tmp_path: Path) -> None:
    out = tmp_path / "reward"
    out.mkdir()
    launcher = [sys.executable, "-c", "import sys; sys.exit(3)", "--"]
    trainers = LaunchedTrainers(launcher, {}, {}, {}, {}, 0, torch_threads=3)
    with pytest.raises(StageLaunchError):
        trainers.reward(RewardJob(tmp_path / "base", [], out))
    assert json.loads((out / "request.json").read_text())["torch_threads"] == 3
