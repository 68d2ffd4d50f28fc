"""Evaluation on the tiny model: finite numbers, zero gain/KL for the base against itself."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from learner.evaluate import EvalConfig, degenerate_reason, evaluate_policy
from learner.rm.train import RewardResult
from learner.sft.train import SFTResult
from tests.learner.ml.helpers import PROMPTS, user

CONFIG = EvalConfig(max_new_tokens=8, sanity_max_new_tokens=8, samples_per_prompt=2)


def test_base_against_itself_has_no_gain_and_no_kl(
    tiny_model_dir: Path, reward_result: RewardResult
) -> None:
    result = evaluate_policy(
        tiny_model_dir, None, reward_result.adapter_dir, [user(p) for p in PROMPTS], CONFIG
    )
    assert result.reward_gain == 0.0  # same seed, same weights: identical samples
    assert result.kl == 0.0
    assert result.win_rate == 0.5
    assert result.reward_policy == result.reward_reference


def test_trained_adapter_gives_sane_numbers(
    tiny_model_dir: Path, reward_result: RewardResult, sft_result: SFTResult
) -> None:
    result = evaluate_policy(
        tiny_model_dir,
        sft_result.adapter_dir,
        reward_result.adapter_dir,
        [user(p) for p in PROMPTS],
        CONFIG,
    )
    metrics = result.metrics()
    assert all(math.isfinite(v) for v in metrics.values())
    assert result.kl > 0  # the SFT adapter moved the policy away from the base
    assert 1 <= result.length_min <= result.length_mean <= result.length_max <= 8
    assert 0.0 <= result.win_rate <= 1.0
    assert len(result.sanity_answers) == len(CONFIG.sanity_prompts)
    assert result.sanity_passed == (not result.sanity_failures)


def test_degenerate_answers_are_caught() -> None:
    assert degenerate_reason([5, 5, 5, 5, 5], "!!!!!", 0.5) is not None
    assert degenerate_reason([], "   ", 0.5) == "empty answer"
    assert degenerate_reason([1, 2, 3, 4, 5], "fine words", 0.5) is None
    assert degenerate_reason([7, 8], "ok", 0.5) is None  # too short to judge repetition


def test_gain_interval_is_left_out_of_the_metrics_when_unbounded() -> None:
    from learner.evaluate import mean_interval
    from tests.learner.factories import eval_result

    assert mean_interval(torch.tensor([1.0])) == (float("-inf"), float("inf"))
    low, high = mean_interval(torch.tensor([1.0, 3.0]))
    assert low < 2.0 < high

    unbounded = eval_result(-math.inf, math.inf)
    assert "eval/reward_gain_low" not in unbounded.metrics()
    bounded = eval_result(-0.5, 0.5)
    assert bounded.metrics()["eval/reward_gain_high"] == 0.5
