"""The whole ML chain on the real embedded model (SmolLM2-135M): SFT -> reward -> PPO -> eval.

Few steps each: this checks that the real model's shapes, chat template and EOS handling work
end to end, not that it learns much in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from learner.evaluate import EvalConfig, evaluate_policy
from learner.ppo.config import PPOConfig
from learner.ppo.train import run_ppo
from learner.rm.config import RewardConfig
from learner.rm.model import RewardModel
from learner.rm.train import train_reward_model
from learner.sft.config import SFTConfig
from learner.sft.train import run_sft
from tests.learner.ml.helpers import PROMPTS, separable_comparisons, sft_examples, user


@pytest.mark.slow
def test_chain_on_smollm2(embedded_model_dir: Path, tmp_path: Path) -> None:
    sft = run_sft(
        embedded_model_dir,
        sft_examples()[:4],
        SFTConfig(num_epochs=2, batch_size=2, learning_rate=1e-3),
        tmp_path / "sft",
    )
    assert sft.metrics["loss/last_epoch"] < sft.metrics["loss/first_epoch"]
    reward = train_reward_model(
        embedded_model_dir,
        separable_comparisons(12),
        RewardConfig(num_epochs=2, batch_size=4, learning_rate=1e-3, eval_fraction=0.25),
        tmp_path / "reward",
    )
    assert math.isfinite(reward.metrics["loss"]) and reward.metrics["eval_count"] == 3
    scores = RewardModel.load(embedded_model_dir, reward.adapter_dir).score(
        [user("What is two plus two?")] * 2, ["thanks four! four!", "thanks have a nice day"]
    )
    assert scores[0] > scores[1]
    prompts = [user(p) for p in PROMPTS]
    ppo = run_ppo(
        embedded_model_dir,
        reward.adapter_dir,
        prompts,
        PPOConfig(num_steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=8),
        tmp_path / "ppo",
        init_adapter=sft.adapter_dir,
    )
    assert all(math.isfinite(v) for v in ppo.metrics.values())
    result = evaluate_policy(
        embedded_model_dir,
        ppo.adapter_dir,
        reward.adapter_dir,
        prompts[:2],
        EvalConfig(max_new_tokens=8, sanity_max_new_tokens=16),
    )
    assert all(math.isfinite(v) for v in result.metrics().values())
    # The real instruct model answers the sanity prompts properly after a tiny PPO step.
    assert result.sanity_passed, result.sanity_failures
