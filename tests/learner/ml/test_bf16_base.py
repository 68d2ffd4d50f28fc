"""A bfloat16 base on the tiny model: only the frozen base is reduced, and the losses stay
within a stated tolerance of float32 on the same seed and data.

Tolerance. bfloat16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 (0.2 %)
of itself. The base's weights are rounded once and every matmul's output again, layer after
layer, so hidden states and logits carry a few such errors; a loss averages them over tokens
and rows. LOSS_RTOL = 2 % is ten bf16 roundings: room for that compounding, while a step that
lost the float32 path (a bfloat16 loss, log-softmax or optimiser state) is caught by the dtype
assertions, which do not depend on a tolerance. On this model the losses differed by 2e-3
relative at most (reward model, PPO) and 1e-5 (SFT, whose near-uniform logits round alike).
Each comparison also asserts that the two runs differ: the bfloat16 path was really taken.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from learner.evaluate import EvalConfig, evaluate_policy
from learner.modeling import ScalarHead
from learner.ppo.config import PPOConfig
from learner.ppo.losses import entropy_from_logits, logprobs_of, policy_loss, value_loss
from learner.ppo.train import _build, _optimizer, run_ppo
from learner.rm.config import RewardConfig
from learner.rm.model import RewardModel
from learner.rm.train import RewardResult, train_reward_model
from learner.sft.config import SFTConfig
from learner.sft.train import SFTResult, completion_loss, run_sft
from tests.learner.ml.helpers import PROMPTS, separable_comparisons, sft_examples, user

LOSS_RTOL = 0.02
DTYPES = ("float32", "bfloat16")


def _relative_gaps(a: list[float], b: list[float]) -> list[float]:
    assert len(a) == len(b) > 0
    return [abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)]


def _assert_close_but_not_equal(float32: list[float], bfloat16: list[float]) -> None:
    gaps = _relative_gaps(float32, bfloat16)
    assert max(gaps) <= LOSS_RTOL, gaps
    assert max(gaps) > 0, "bfloat16 gave float32's losses bit for bit: was the base reduced?"


@pytest.fixture(scope="module")
def rm_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    runs = {}
    for dtype in DTYPES:
        config = RewardConfig(
            num_epochs=2, batch_size=8, learning_rate=5e-3, eval_fraction=0.0,
            head_init="normal", user_reliability=False, norm_sample=8, base_dtype=dtype,
        )  # fmt: skip
        out = tmp_path_factory.mktemp(f"rm-{dtype}")
        runs[dtype] = train_reward_model(tiny_model_dir, separable_comparisons(24), config, out)
    return runs


@pytest.fixture(scope="module")
def sft_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    runs = {}
    for dtype in DTYPES:
        config = SFTConfig(num_epochs=2, batch_size=3, learning_rate=5e-3, base_dtype=dtype)
        out = tmp_path_factory.mktemp(f"sft-{dtype}")
        runs[dtype] = run_sft(tiny_model_dir, sft_examples(), config, out)
    return runs


def test_reward_model_losses_in_bfloat16_are_within_tolerance(rm_runs: dict[str, Any]) -> None:
    losses = {dtype: [row["loss"] for row in rm_runs[dtype].history] for dtype in DTYPES}
    _assert_close_but_not_equal(losses["float32"], losses["bfloat16"])


def test_sft_losses_in_bfloat16_are_within_tolerance(sft_runs: dict[str, Any]) -> None:
    losses = {dtype: [row["loss"] for row in sft_runs[dtype].history] for dtype in DTYPES}
    _assert_close_but_not_equal(losses["float32"], losses["bfloat16"])


def _ppo_loss(model: Any, ids: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The update's loss on fixed rows and the log-probs (B, R). The old log-probs are those
    of a uniform policy over the tiny model's 320 tokens, so the ratio follows the model."""
    logits, values = model(ids, torch.ones_like(ids), context)  # (B, R, V), (B, R)
    logprobs = logprobs_of(logits, ids[:, context:])  # (B, R)
    generator = torch.Generator().manual_seed(0)
    advantages = torch.randn(logprobs.shape, generator=generator)  # (B, R)
    mask = torch.ones_like(advantages)
    old_logprobs = torch.full_like(logprobs, -math.log(320))
    pg = policy_loss(logprobs, old_logprobs, advantages, mask, 0.2)
    vf, _ = value_loss(values, torch.zeros_like(values), advantages, mask, 0.2)
    return pg.loss + 0.1 * vf, logprobs


def test_ppo_loss_and_logprobs_in_bfloat16_are_within_tolerance(
    tiny_model_dir: Path, sft_result: SFTResult
) -> None:
    ids = torch.randint(3, 320, (4, 12), generator=torch.Generator().manual_seed(1))
    out = {}
    for dtype in DTYPES:
        config = PPOConfig(base_dtype=dtype)
        torch.manual_seed(0)  # the same value head in both
        model = _build(tiny_model_dir, config, sft_result.adapter_dir)
        loss, logprobs = _ppo_loss(model, ids, context=4)
        assert loss.dtype == logprobs.dtype == torch.float32
        out[dtype] = (loss.item(), logprobs.detach())
    _assert_close_but_not_equal([out["float32"][0]], [out["bfloat16"][0]])
    # Log-probs of about -5.8 nats (a near-uniform 320-token vocabulary): 2 % of them.
    assert torch.allclose(out["float32"][1], out["bfloat16"][1], rtol=LOSS_RTOL)


def test_under_bfloat16_only_the_base_is_reduced(
    tiny_model_dir: Path, sft_result: SFTResult
) -> None:
    model = _build(tiny_model_dir, PPOConfig(base_dtype="bfloat16"), sft_result.adapter_dir)
    optimizer = _optimizer(model, PPOConfig())
    ids = torch.randint(3, 320, (2, 8), generator=torch.Generator().manual_seed(2))
    _ppo_loss(model, ids, context=3)[0].backward()
    optimizer.step()
    frozen = [p for p in model.policy.parameters() if not p.requires_grad]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert frozen and {p.dtype for p in frozen} == {torch.bfloat16}
    assert any("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    assert {p.dtype for p in trained} == {torch.float32}  # LoRA and the value head
    states = [s for p in trained for s in optimizer.state[p].values() if s.dim() > 0]
    assert len(states) == 2 * len(trained)  # exp_avg and exp_avg_sq of every one
    assert {s.dtype for s in states} == {torch.float32}


def test_reward_model_on_a_bfloat16_base_keeps_head_and_rewards_float32(
    tiny_model_dir: Path,
) -> None:
    model = RewardModel.create(tiny_model_dir, RewardConfig(base_dtype="bfloat16"))
    frozen = {p.dtype for p in model.backbone.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    assert model(ids, torch.ones_like(ids)).dtype == torch.float32


def _saved_dtypes(adapter_dir: Path) -> set[torch.dtype]:
    files = sorted(adapter_dir.glob("*.safetensors"))
    assert files
    return {t.dtype for path in files for t in load_file(str(path)).values()}


def test_adapters_trained_on_a_bfloat16_base_are_saved_in_float32(
    rm_runs: dict[str, RewardResult], sft_runs: dict[str, SFTResult]
) -> None:
    assert _saved_dtypes(rm_runs["bfloat16"].adapter_dir) == {torch.float32}
    assert _saved_dtypes(sft_runs["bfloat16"].adapter_dir) == {torch.float32}


def test_ppo_and_evaluation_run_on_a_bfloat16_base(
    tiny_model_dir: Path, reward_result: RewardResult, sft_result: SFTResult, tmp_path: Path
) -> None:
    config = PPOConfig(
        num_steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6,
        base_dtype="bfloat16",
    )  # fmt: skip
    prompts = [user(p) for p in PROMPTS]
    result = run_ppo(
        tiny_model_dir, reward_result.adapter_dir, prompts, config, tmp_path, sft_result.adapter_dir
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    assert _saved_dtypes(result.adapter_dir) == {torch.float32}
    assert _saved_dtypes(tmp_path) == {torch.float32}  # the value head beside it
    evaluation = EvalConfig(max_new_tokens=6, sanity_max_new_tokens=6, base_dtype="bfloat16")
    scores = evaluate_policy(
        tiny_model_dir, result.adapter_dir, reward_result.adapter_dir, prompts, evaluation
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in scores.metrics().values())


def test_reward_scores_on_a_bfloat16_base_are_within_tolerance(
    tiny_model_dir: Path, reward_result: RewardResult
) -> None:
    prompts = [user(p) for p in PROMPTS]
    answers = ["four! four!", "the lazy dog", "sure here is", "thanks", "hello", "brown fox"]
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = RewardModel.load(tiny_model_dir, reward_result.adapter_dir, base_dtype=dtype)
        scores[dtype] = model.score(prompts, answers)
        assert scores[dtype].dtype == torch.float32
    gap = (scores[torch.float32] - scores[torch.bfloat16]).abs().max()
    spread = scores[torch.float32].std()
    # Relative to the rewards' spread, not to each reward: a reward near 0 has no scale.
    assert 0 < gap <= LOSS_RTOL * spread


def test_bfloat16_logits_and_states_are_upcast_before_log_softmax_and_heads() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(2, 5, 320, generator=generator)).bfloat16()  # (B, T, V)
    tokens = torch.randint(0, 320, (2, 5), generator=generator)
    exact = logits.float()  # the same values: a bfloat16 -> float32 cast is exact
    assert torch.equal(logprobs_of(logits, tokens), logprobs_of(exact, tokens))
    assert torch.equal(entropy_from_logits(logits), entropy_from_logits(exact))
    labels = tokens.clone()
    labels[:, :2] = -100
    loss = completion_loss(logits, labels)
    assert loss.dtype == torch.float32 and torch.equal(loss, completion_loss(exact, labels))
    head = ScalarHead(16, init="normal")
    hidden = torch.randn(3, 16, generator=generator).bfloat16()
    assert torch.equal(head(hidden), head(hidden.float()))
