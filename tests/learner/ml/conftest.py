"""Trained tiny artefacts shared by the ML tests (each trained once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from learner.rm.config import RewardConfig
from learner.rm.train import RewardResult, train_reward_model
from learner.sft.config import SFTConfig
from learner.sft.train import SFTResult, run_sft
from tests.learner.ml.helpers import separable_comparisons, sft_examples


@pytest.fixture(scope="session", autouse=True)
def _auto_base_dtype_is_float32() -> Iterator[None]:
    """``base_dtype="auto"`` resolves to float32 in these tests on every machine: with native
    bf16 it would pick bfloat16 on some CPUs only, and tests that compare two runs to 1e-5
    (accumulation, checkpointing) would pass or fail by machine. Session scope, so the trained
    session artefacts below follow it too. The bfloat16 tests ask for bfloat16 by name
    (test_bf16_base.py); how ``auto`` resolves is tested with the check monkeypatched
    (tests/learner/test_precision.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("learner.precision.cpu_has_native_bf16", lambda: False)
        yield


@pytest.fixture(scope="session")
def reward_result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RewardResult:
    config = RewardConfig(num_epochs=4, batch_size=8, learning_rate=5e-3, eval_fraction=0.25)
    out = tmp_path_factory.mktemp("reward")
    return train_reward_model(tiny_model_dir, separable_comparisons(48), config, out)


@pytest.fixture(scope="session")
def sft_result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SFTResult:
    config = SFTConfig(num_epochs=5, batch_size=3, learning_rate=5e-3)
    return run_sft(tiny_model_dir, sft_examples(), config, tmp_path_factory.mktemp("sft"))
