"""Reward-model training on the tiny model: learns a separable preference, every LoRA/head
parameter moves, split by pair, saved adapter reloads to the same scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learner.data import Comparison, Rating
from learner.modeling import set_seed
from learner.rm.config import RewardConfig
from learner.rm.model import (
    HEAD_FILE,
    NORM_FILE,
    POOLING_FILE,
    SUM_SCALE,
    RewardModel,
    RewardNorm,
    pool_answer,
    read_pooling,
)
from learner.rm.train import RewardResult, _param_groups, split_by_pair, train_reward_model
from tests.learner.ml.helpers import separable_comparisons, user


def test_loss_falls_and_held_out_accuracy_beats_chance(reward_result: RewardResult) -> None:
    history = reward_result.history
    first = sum(h["loss"] for h in history[:3]) / 3
    last = sum(h["loss"] for h in history[-3:]) / 3
    assert last < first
    metrics = reward_result.metrics
    assert metrics["eval_count"] == 12 and metrics["train_count"] == 36
    assert metrics["accuracy"] > 0.75  # held-out pairs; chance is 0.5
    assert metrics["margin"] > 0
    assert metrics["rewards/chosen"] > metrics["rewards/rejected"]
    for key in ("loss", "reward/mean", "reward/std"):
        assert torch.isfinite(torch.tensor(metrics[key]))


def test_saved_adapter_reloads_and_ranks_held_out_answers(
    tiny_model_dir: Path, reward_result: RewardResult
) -> None:
    model = RewardModel.load(tiny_model_dir, reward_result.adapter_dir)
    prompts = [user("What is two plus two?")] * 2
    scores = model.score(prompts, ["thanks four! four!", "thanks have a nice day"])
    assert scores.shape == (2,)
    assert scores[0] > scores[1]


def test_every_trained_parameter_changes(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = RewardConfig(num_epochs=2, batch_size=4, learning_rate=1e-2, eval_fraction=0.0)
    set_seed(0)
    # Start from a saved adapter so the "before" values are on disk.
    RewardModel.create(tiny_model_dir, config).save(tmp_path / "init")
    comparisons = separable_comparisons(8)
    ratings = [Rating(c.pair_id, c.prompt, c.chosen, True) for c in comparisons[:4]]
    result = train_reward_model(
        tiny_model_dir, comparisons, config, tmp_path / "out", tmp_path / "init", ratings
    )
    assert result.metrics["rating_count"] == 4
    assert any("rating_loss" in row for row in result.history)
    for name in ("adapter_model.safetensors", HEAD_FILE):
        before = load_file(str(tmp_path / "init" / name))
        after = load_file(str(result.adapter_dir / name))
        assert before.keys() == after.keys() and before
        unchanged = [k for k in before if torch.equal(before[k], after[k])]
        assert not unchanged, f"parameters did not change: {unchanged}"


def test_split_is_by_pair_and_deterministic() -> None:
    comparisons = separable_comparisons(20)
    # A 3-way ranking: three comparisons sharing one pair id must stay together.
    ranking = [
        c.__class__(
            pair_id="rank-1", prompt=c.prompt, chosen=c.chosen, rejected=c.rejected, weight=1 / 3
        )
        for c in comparisons[:3]
    ]
    items = comparisons + ranking
    train, held_out = split_by_pair(items, 0.3, 1, seed=7)
    assert {c.pair_id for c in train}.isdisjoint({c.pair_id for c in held_out})
    assert len(train) + len(held_out) == len(items)
    assert len({c.pair_id for c in held_out}) == round(0.3 * 21)
    again = split_by_pair(list(reversed(items)), 0.3, 1, seed=7)
    assert {c.pair_id for c in again[1]} == {c.pair_id for c in held_out}
    other = split_by_pair(items, 0.3, 1, seed=8)
    assert {c.pair_id for c in other[1]} != {c.pair_id for c in held_out}


def test_split_keeps_a_minimum_held_out_only_when_asked() -> None:
    few = separable_comparisons(4)
    assert len(split_by_pair(few, 0.1, 1, seed=0)[1]) == 1  # round(0.4) = 0, raised to 1
    assert split_by_pair(few, 0.0, 1, seed=0)[1] == []
    assert split_by_pair(few[:1], 0.5, 1, seed=0)[1] == []  # one pair: keep it for training


def test_fresh_reward_model_scores_zero_everywhere(tiny_model_dir: Path) -> None:
    """Zero-initialised head: an untrained reward model has no opinion (no random ordering)."""
    model = RewardModel.create(tiny_model_dir, RewardConfig())
    scores = model.score([user("Hi?")] * 3, ["a", "bb bb", "hello there, friend"])
    assert torch.equal(scores, torch.zeros(3))


def test_normal_head_init_is_still_available(tiny_model_dir: Path) -> None:
    model = RewardModel.create(tiny_model_dir, RewardConfig(), head_init="normal")
    scores = model.score([user("Hi?")] * 2, ["a", "hello there, friend"])
    assert not torch.equal(scores, torch.zeros(2))


def test_head_learning_rate_puts_the_head_and_threshold_in_their_own_group(
    tiny_model_dir: Path,
) -> None:
    model = RewardModel.create(tiny_model_dir, RewardConfig())
    (one,) = _param_groups(model, RewardConfig())
    body, head = _param_groups(model, RewardConfig(head_learning_rate=2e-3))
    assert head["lr"] == 2e-3 and "lr" not in body  # the body keeps the optimiser's default
    head_ids = {id(p) for p in head["params"]}
    expected = {id(model.head.linear.weight), id(model.head.linear.bias), id(model.threshold)}
    assert head_ids == expected
    assert len(body["params"]) + len(head["params"]) == len(one["params"])


def test_saved_reward_statistics_standardise_the_training_answers(
    tiny_model_dir: Path, reward_result: RewardResult
) -> None:
    metrics = reward_result.metrics
    assert metrics["norm/std"] > 0
    assert (reward_result.adapter_dir / NORM_FILE).is_file()
    model = RewardModel.load(tiny_model_dir, reward_result.adapter_dir)
    assert model.norm == RewardNorm(metrics["norm/mean"], metrics["norm/std"])
    comparisons = separable_comparisons(48)
    train, _ = split_by_pair(comparisons, 0.25, 1, RewardConfig().seed)
    prompts = [c.prompt for c in train] * 2
    answers = [c.chosen for c in train] + [c.rejected for c in train]
    standard = model.score(prompts, answers, normalized=True)
    raw = model.score(prompts, answers)
    torch.testing.assert_close(standard, (raw - model.norm.mean) / model.norm.std)
    assert abs(standard.mean().item()) < 1e-3
    assert abs(standard.std(unbiased=False).item() - 1.0) < 1e-3


def test_reward_norm_without_file_is_identity(tmp_path: Path) -> None:
    assert RewardNorm.load(tmp_path) == RewardNorm(0.0, 1.0)
    assert RewardNorm.fit(torch.ones(4)) == RewardNorm(1.0, 1.0)  # no spread: do not divide by 0


def test_ties_and_ratings_move_the_rewards_as_they_say(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A tie pulls two answers' rewards together; thumbs push an answer above / below others."""
    prompt = user("What is two plus two?")
    votes = separable_comparisons(16)
    ties = [Comparison(f"tie-{i}", prompt, "brown fox", "hello", 1.0, 0.5) for i in range(16)]
    thumbs = [Rating(f"r-{i}", prompt, "the lazy dog", False) for i in range(16)]
    config = RewardConfig(
        num_epochs=6, batch_size=8, learning_rate=5e-3, eval_fraction=0.0, rating_weight=1.0
    )
    result = train_reward_model(tiny_model_dir, votes + ties, config, tmp_path, ratings=thumbs)
    model = RewardModel.load(tiny_model_dir, result.adapter_dir)
    fox, hello, dog, four = model.score(
        [prompt] * 4, ["brown fox", "hello", "the lazy dog", "four! four!"]
    )
    assert abs(fox - hello) < abs(four - fox)  # the tie: close together
    assert dog < four and dog < model.threshold  # thumbs down: below the rating threshold


def test_pooled_head_averages_and_sums_only_the_answer_tokens() -> None:
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    answer = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1]])  # prompt, answer, padding
    pooled = pool_answer(hidden, answer)
    assert pooled.shape == (2, 4)
    torch.testing.assert_close(pooled[0, :2], hidden[0, 1:3].mean(0))
    torch.testing.assert_close(pooled[0, 2:], hidden[0, 1:3].sum(0) / SUM_SCALE)
    torch.testing.assert_close(pooled[1, :2], hidden[1, 3])
    torch.testing.assert_close(pooled[1, 2:], hidden[1, 3] / SUM_SCALE)


def test_pooled_reward_model_learns_saves_its_pooling_and_ignores_padding(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = RewardConfig(
        num_epochs=4, batch_size=8, learning_rate=5e-3, eval_fraction=0.25, pooling="mean+sum"
    )
    result = train_reward_model(tiny_model_dir, separable_comparisons(48), config, tmp_path)
    assert result.metrics["accuracy"] > 0.75
    assert read_pooling(result.adapter_dir) == "mean+sum"
    model = RewardModel.load(tiny_model_dir, result.adapter_dir)
    assert model.pooling == "mean+sum"
    prompts = [user("What is two plus two?"), user("Hi")]
    answers = ["thanks four! four!", "thanks have a nice day, a very nice long day to you"]
    together = model.score(prompts, answers)  # the first row is padded to the second's length
    alone = torch.cat([model.score(prompts[i : i + 1], answers[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert together[0] > model.score([prompts[0]], ["thanks have a nice day"])[0]


def test_reward_adapters_without_a_pooling_record_use_the_last_token(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    RewardModel.create(tiny_model_dir, RewardConfig(), pooling="last").save(old)
    (old / POOLING_FILE).unlink()  # as saved before the pooling was recorded
    assert RewardModel.load(tiny_model_dir, old).pooling == "last"
    # Warm start across poolings: the body continues, the head (another width) starts afresh.
    pooled = RewardModel.create(tiny_model_dir, RewardConfig(), old, pooling="mean+sum")
    assert torch.equal(pooled.score([user("Hi?")], ["hello"]), torch.zeros(1))
    with pytest.raises(ValueError, match="pooling must be one of"):
        RewardModel.create(tiny_model_dir, RewardConfig(), pooling="max")
