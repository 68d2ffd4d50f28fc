"""Evaluate a policy adapter before publishing: reward gain, KL to the reference, sanity.

On held-out prompts the policy (base + adapter) and the reference (adapter disabled) each sample
responses with the same seed; the reward model scores both. Reported: the mean reward gain of
policy over reference and the policy's win rate against it; the mean sequence KL(policy || ref)
estimated on the policy's own samples (sum over tokens of the per-token estimator, Schulman's
k1/k3, http://joschu.net/blog/kl-approx.html); response length statistics. Sanity prompts are
answered greedily and must give finite log-probs and scores, non-empty text and no degenerate
repetition. The learner's gates (KL budget, sanity) read these numbers.

One base model holds the policy adapter, the reference (adapters disabled) and the reward model
(a frozen adapter switched on for scoring; ``learner.adapters``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.stats import Z_95
from learner.adapters import REWARD_ADAPTER
from learner.modeling import (
    ScalarHead,
    check_base_dtype,
    load_base_model,
    load_tokenizer,
    option,
    set_seed,
    torch_device,
)
from learner.ppo.kl import kl_per_token
from learner.ppo.policy import PolicyWithValue, response_logprobs
from learner.ppo.rollout import Rollout, sample, sample_as
from learner.precision import base_dtype_of
from learner.rm.model import RewardModel
from schemas.events import ChatMessage

logger = logging.getLogger(__name__)

DEFAULT_SANITY_PROMPTS = (
    "What is 2 + 2?",
    "Say hello in one short sentence.",
    "Name a colour.",
)


@dataclass
class EvalConfig:
    max_new_tokens: int = option(128, "Response length limit (serving's default).")
    temperature: float = option(
        1.0, "Sampling temperature for the reward and KL estimates (the serving default)."
    )
    top_p: float = option(1.0, "Nucleus sampling for the estimates.")
    samples_per_prompt: int = option(1, "Sampled responses per held-out prompt and model.")
    max_prompt_length: int = option(256, "Prompts are cut from the left to this many tokens.")
    kl_estimator: str = option("k1", "'k1' or 'k3' per-token estimator, summed per response.")
    batch_size: int = option(16, "Prompts per generation / scoring batch.")
    rollout_engine: str = option(
        "auto",
        "What decodes the answers: 'decode_loop' (the batch decoder; also 'auto') or 'generate' "
        "(Hugging Face generate).",
    )
    sanity_prompts: tuple[str, ...] = option(
        DEFAULT_SANITY_PROMPTS, "User prompts answered greedily by the policy for sanity checks."
    )
    sanity_max_new_tokens: int = option(32, "Length limit of sanity answers.")
    # A healthy answer of a dozen tokens rarely repeats one token more than half the time;
    # a collapsed policy ("!!!!!!") does so at once.
    max_repeat_fraction: float = option(
        0.5, "A sanity answer of >= 4 tokens fails if one token is more than this share of it."
    )
    seed: int = option(0, "Seed of the sampling (same for policy and reference).")
    device: str = option("auto", "'auto' (CUDA when present), 'cpu', or 'cuda[:N]'.")
    base_dtype: str = option(
        "auto", "Base weights' dtype: 'auto' (learner.precision), 'float32' or 'bfloat16'."
    )

    def __post_init__(self) -> None:
        check_base_dtype(self.base_dtype)


@dataclass
class EvalResult:
    reward_policy: float  # mean reward of the policy's samples
    reward_reference: float  # mean reward of the reference's samples
    reward_gain: float  # reward_policy - reward_reference, in reward standard units
    reward_gain_low: float  # 95 % interval of the mean paired gain (normal approximation)
    reward_gain_high: float
    win_rate: float  # share of samples where the policy beat the reference (ties count half)
    kl: float  # mean over responses of sum_t KL_t(policy || reference)
    length_mean: float  # policy response tokens
    length_min: float
    length_max: float
    reference_length_mean: float
    sanity_passed: bool
    sanity_failures: list[str] = field(default_factory=list)
    sanity_answers: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for manifests and Prometheus."""
        return {
            "eval/reward_policy": self.reward_policy,
            "eval/reward_reference": self.reward_reference,
            "eval/reward_gain": self.reward_gain,
            "eval/win_rate": self.win_rate,
            "eval/kl": self.kl,
            "eval/length_mean": self.length_mean,
            "eval/length_min": self.length_min,
            "eval/length_max": self.length_max,
            "eval/reference_length_mean": self.reference_length_mean,
            "eval/sanity_passed": float(self.sanity_passed),
        } | self._gain_interval()

    def _gain_interval(self) -> dict[str, float]:
        # Unbounded with fewer than two held-out samples: left out (manifests hold finite
        # numbers only).
        if not (math.isfinite(self.reward_gain_low) and math.isfinite(self.reward_gain_high)):
            return {}
        return {
            "eval/reward_gain_low": self.reward_gain_low,
            "eval/reward_gain_high": self.reward_gain_high,
        }


def degenerate_reason(tokens: Sequence[int], text: str, max_repeat_fraction: float) -> str | None:
    """Why an answer is unusable, or None: empty, or one token repeated."""
    if not text.strip():
        return "empty answer"
    if len(tokens) >= 4:
        token, count = Counter(tokens).most_common(1)[0]
        if count / len(tokens) > max_repeat_fraction:
            return f"token {token} is {count}/{len(tokens)} of the answer"
    return None


def mean_interval(values: torch.Tensor, z: float = Z_95) -> tuple[float, float]:
    """95 % interval of the mean of ``values`` (N,): mean +/- z * sd / sqrt(N).

    The paired differences of one prompt's policy and reference samples are independent across
    prompts, so the central limit theorem applies; with N < 2 the interval is unbounded.
    """
    n = values.numel()
    if n < 2:
        return (float("-inf"), float("inf"))
    mean = values.float().mean().item()
    half = z * values.float().std(unbiased=True).item() / n**0.5
    return (mean - half, mean + half)


def _load_policy(
    base_model_dir: Path, adapter_dir: Path | None, dtype: torch.dtype
) -> PolicyWithValue:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_base_model(base_model_dir, dtype)
    if adapter_dir is not None:
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    else:
        # A fresh LoRA has B = 0: exactly the base model, so "no adapter" takes the same path.
        peft_model = get_peft_model(base, LoraConfig(r=1, target_modules="all-linear"))
    model = PolicyWithValue(peft_model, ScalarHead(base.config.hidden_size))
    model.requires_grad_(False)
    return model.eval()


def _generate(
    model: PolicyWithValue,
    tokenizer: object,
    prompts: Sequence[Sequence[ChatMessage]],
    config: EvalConfig,
    reference: bool,
) -> list[Rollout]:
    out = []
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        set_seed(config.seed + start)  # same seed for policy and reference batches
        if reference:
            with model.reference():
                out.append(sample_as(config, model.policy, tokenizer, batch))
        else:
            out.append(sample_as(config, model.policy, tokenizer, batch))
    return out


def _sequence_kl(model: PolicyWithValue, rollout: Rollout, config: EvalConfig) -> torch.Tensor:
    args = (
        rollout.input_ids,
        rollout.attention_mask,
        rollout.context_length,
        config.temperature,
        config.batch_size,
    )
    logprobs, _ = response_logprobs(model, *args)
    with model.reference():
        ref_logprobs, _ = response_logprobs(model, *args)
    kl = kl_per_token(logprobs, ref_logprobs, config.kl_estimator)  # type: ignore[arg-type]
    return (kl * rollout.response_mask).sum(1)  # (B,)


def _sanity(
    model: PolicyWithValue, tokenizer: object, reward_model: RewardModel, config: EvalConfig
) -> tuple[list[str], list[str]]:
    prompts = [(ChatMessage(role="user", content=p),) for p in config.sanity_prompts]
    if not prompts:
        return [], []
    rollout = sample(
        model.policy,
        tokenizer,
        prompts,
        config.max_prompt_length,
        config.sanity_max_new_tokens,
        1.0,
        1.0,
        greedy=True,
        engine=config.rollout_engine,
    )
    logprobs, _ = response_logprobs(
        model,
        rollout.input_ids,
        rollout.attention_mask,
        rollout.context_length,
        1.0,
        config.batch_size,
    )
    scores = reward_model.score(prompts, rollout.texts)
    failures = []
    for i, text in enumerate(rollout.texts):
        mask = rollout.response_mask[i].bool()
        tokens = rollout.input_ids[i, rollout.context_length :][mask].tolist()
        reason = degenerate_reason(tokens, text, config.max_repeat_fraction)
        if not torch.isfinite(logprobs[i][mask]).all() or not torch.isfinite(scores[i]):
            reason = "non-finite log-probs or score"
        if reason:
            failures.append(f"{config.sanity_prompts[i]!r}: {reason}")
    return failures, rollout.texts


def evaluate_policy(
    base_model_dir: Path,
    policy_adapter_dir: Path | None,
    reward_adapter_dir: Path,
    prompts: Sequence[Sequence[ChatMessage]],
    config: EvalConfig,
) -> EvalResult:
    """Compare base + ``policy_adapter_dir`` with the base on ``prompts`` (held out from PPO)."""
    if not prompts:
        raise ValueError("evaluation needs at least one held-out prompt")
    device = torch_device(config.device)
    tokenizer = load_tokenizer(base_model_dir)
    dtype = base_dtype_of(config)
    model = _load_policy(base_model_dir, policy_adapter_dir, dtype)
    reward_model = RewardModel.attach(model.policy, reward_adapter_dir, REWARD_ADAPTER, tokenizer)
    model, reward_model = model.to(device), reward_model.to(device)
    repeated = [p for p in prompts for _ in range(config.samples_per_prompt)]
    policy_rollouts = _generate(model, tokenizer, repeated, config, reference=False)
    ref_rollouts = _generate(model, tokenizer, repeated, config, reference=True)
    policy_texts = [t for r in policy_rollouts for t in r.texts]
    ref_texts = [t for r in ref_rollouts for t in r.texts]
    policy_scores = reward_model.score(repeated, policy_texts, config.batch_size, True)  # (N,)
    ref_scores = reward_model.score(repeated, ref_texts, config.batch_size, True)  # (N,)
    gain_low, gain_high = mean_interval(policy_scores - ref_scores)
    kl = torch.cat([_sequence_kl(model, r, config) for r in policy_rollouts])  # (N,)
    lengths = torch.cat([r.response_mask.sum(1) for r in policy_rollouts]).float()
    ref_lengths = torch.cat([r.response_mask.sum(1) for r in ref_rollouts]).float()
    wins = (policy_scores > ref_scores).float() + 0.5 * (policy_scores == ref_scores).float()
    failures, answers = _sanity(model, tokenizer, reward_model, config)
    result = EvalResult(
        reward_policy=policy_scores.mean().item(),
        reward_reference=ref_scores.mean().item(),
        reward_gain=(policy_scores - ref_scores).mean().item(),
        reward_gain_low=gain_low,
        reward_gain_high=gain_high,
        win_rate=wins.mean().item(),
        kl=kl.mean().item(),
        length_mean=lengths.mean().item(),
        length_min=lengths.min().item(),
        length_max=lengths.max().item(),
        reference_length_mean=ref_lengths.mean().item(),
        sanity_passed=not failures,
        sanity_failures=failures,
        sanity_answers=answers,
    )
    logger.info("evaluation: %s failures=%s", result.metrics(), failures)
    return result
