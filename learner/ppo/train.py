"""LoRA PPO against the reward model (runs unchanged under ``accelerate launch``).

One iteration (Ouyang et al. 2022; Huang et al. 2024, https://arxiv.org/abs/2403.17031):
1) sample ``samples_per_prompt`` responses per prompt from the policy (base + LoRA), with the
   rollout engine of ``config.rollout_engine`` (``learner.ppo.rollout_engines``);
2) score: reward model at the end of each response, in standard units (``RewardNorm``; minus a
   penalty if it never emitted EOS, when that is on), log-probs and values of the policy,
   log-probs of the reference (same module, adapter off);
3) advantages: RLOO (default) on R = score - beta * sum_t KL_t with the other samples of the
   same prompt as baseline, or GAE on per-token rewards -beta * KL_t + score at the last token;
   whitened either way;
4) ``ppo_epochs`` passes of minibatch updates with the clipped policy loss (and, for GAE, the
   clipped value loss; the first ``value_warmup_steps`` iterations train the value head only);
5) update beta (fixed or Ziegler et al. adaptive controller).
The main process saves the PEFT adapter (servable) and the value head once at the end.

One frozen base per process (``learner.adapters``): the policy LoRA, the reference (adapters
off) and the reward model (a second, frozen LoRA with its own head) all run on it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from learner.adapters import POLICY_ADAPTER, REWARD_ADAPTER
from learner.metrics import stage_progress
from learner.modeling import (
    ScalarHead,
    accumulation_scales,
    backward_micro_batch,
    enable_gradient_checkpointing,
    load_base_model,
    load_tokenizer,
    make_accelerator,
    set_seed,
    trainable_parameters,
    with_lora,
)
from learner.ppo.advantages import (
    gae,
    masked_mean,
    masked_whiten,
    rloo_advantages,
    sequence_rewards,
    token_rewards,
)
from learner.ppo.config import PPOConfig
from learner.ppo.kl import AdaptiveKLController, FixedKLController, kl_per_token
from learner.ppo.losses import entropy_from_logits, logprobs_of, policy_loss, value_loss
from learner.ppo.policy import PolicyWithValue, response_logprobs
from learner.ppo.rollout import Rollout, sample_as
from learner.ppo.rollout_engines import open_rollout_engine
from learner.precision import base_dtype_of
from learner.rm.model import RewardModel
from learner.sharding import (
    gathered_state,
    prepare_for_sharding,
    root_unsharded,
    sub_state,
    unwrapped_for_saving,
)
from schemas.events import ChatMessage

logger = logging.getLogger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class PPOResult:
    adapter_dir: Path  # PEFT LoRA adapter only (adapter_config.json, adapter_model.safetensors)
    metrics: dict[str, float]  # the last iteration's metrics
    history: list[dict[str, float]] = field(default_factory=list)  # one row per iteration
    value_head_path: Path | None = None


@dataclass
class Experience:
    """A scored rollout. B rollouts, R response tokens."""

    rollout: Rollout
    logprobs: torch.Tensor  # (B, R) policy at sampling time
    ref_logprobs: torch.Tensor  # (B, R) reference (adapter disabled)
    values: torch.Tensor  # (B, R)
    scores: torch.Tensor  # (B,) reward model, with the missing-EOS penalty
    kl: torch.Tensor  # (B, R) per-token KL estimate, 0 on padding
    advantages: torch.Tensor  # (B, R) whitened
    returns: torch.Tensor  # (B, R)


def _controller(config: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if config.adaptive_kl:
        return AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
    return FixedKLController(config.kl_coef)


def _validate(config: PPOConfig, prompts: Sequence[Any]) -> None:
    if not prompts:
        raise ValueError("no prompts for PPO")
    if config.kl_estimator not in ("k1", "k3"):
        raise ValueError("kl_estimator must be 'k1' or 'k3'")
    if config.temperature <= 0:
        raise ValueError("PPO samples: temperature must be > 0")
    if config.advantage_estimator not in ("rloo", "gae"):
        raise ValueError("advantage_estimator must be 'rloo' or 'gae'")
    if config.advantage_estimator == "rloo" and config.samples_per_prompt < 2:
        raise ValueError("RLOO needs samples_per_prompt >= 2")
    if config.samples_per_prompt < 1:
        raise ValueError("samples_per_prompt must be >= 1")
    if config.mini_batch_size > config.batch_size * config.samples_per_prompt:
        raise ValueError("mini_batch_size must not exceed batch_size * samples_per_prompt")


def _score_rollout(
    model: PolicyWithValue,
    reward_model: RewardModel,
    prompts: Sequence[Sequence[ChatMessage]],
    rollout: Rollout,
    config: PPOConfig,
    kl_coef: float,
) -> Experience:
    mask = rollout.response_mask.float()  # (B, R)
    args = (rollout.input_ids, rollout.attention_mask, rollout.context_length)
    logprobs, values = response_logprobs(
        model, *args, config.temperature, config.forward_batch_size
    )
    with model.reference():
        ref_logprobs, _ = response_logprobs(
            model, *args, config.temperature, config.forward_batch_size
        )
    scores = reward_model.score(prompts, rollout.texts, config.reward_batch_size, normalized=True)
    scores = scores.to(logprobs.device)
    if config.missing_eos_penalty is not None:
        scores = scores - config.missing_eos_penalty * (~rollout.has_eos).float()
    kl = kl_per_token(logprobs, ref_logprobs, config.kl_estimator) * mask  # type: ignore[arg-type]
    if config.advantage_estimator == "rloo":
        seq = sequence_rewards(scores, kl, mask, kl_coef)  # (B,)
        advantages = rloo_advantages(seq, config.samples_per_prompt)[:, None] * mask  # (B, R)
        returns = torch.zeros_like(values)  # no critic
    else:
        rewards = token_rewards(scores, kl, mask, kl_coef)
        if config.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
        advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, mask) * mask
    return Experience(
        rollout, logprobs, ref_logprobs, values * mask, scores, kl, advantages, returns
    )


def _update(
    model: Any,
    optimizer: Any,
    accelerator: Any,
    exp: Experience,
    config: PPOConfig,
    generator: torch.Generator,
    policy_on: bool = True,
) -> dict[str, float]:
    """ppo_epochs passes of minibatch updates; returns means of the per-minibatch statistics.

    Each mini-batch is a micro-batch of gradient accumulation: the optimiser steps after every
    ``gradient_accumulation_steps`` of them (and after a pass's last). The loss is the clipped
    policy loss (unless ``policy_on`` is False: value warm-up) plus, with GAE,
    ``vf_coef`` times the clipped value loss.
    """
    use_critic = config.advantage_estimator == "gae"
    stats: dict[str, list[float]] = {}
    rollout = exp.rollout
    n = rollout.input_ids.shape[0]
    context = rollout.context_length
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n, generator=generator)
        starts = range(0, n, config.mini_batch_size)
        plan = accumulation_scales(len(starts), config.gradient_accumulation_steps)
        for start, (scale, steps_after) in zip(starts, plan, strict=True):
            rows = order[start : start + config.mini_batch_size].to(rollout.input_ids.device)
            mask = rollout.response_mask[rows].float()  # (b, R)
            logits, vpred = model(rollout.input_ids[rows], rollout.attention_mask[rows], context)
            logits = logits / config.temperature  # (b, R, V)
            new_logprobs = logprobs_of(logits, rollout.input_ids[rows, context:])  # (b, R)
            pg = policy_loss(
                new_logprobs, exp.logprobs[rows], exp.advantages[rows], mask, config.clip_range
            )
            vf, vf_clipfrac = value_loss(
                vpred, exp.values[rows], exp.returns[rows], mask, config.clip_range_value
            )
            # A switched-off term stays in the graph with weight 0: under DistributedDataParallel
            # a parameter without a gradient in a step is an error.
            loss = (pg.loss if policy_on else 0.0 * pg.loss) + (
                config.vf_coef * vf if use_critic else 0.0 * vf
            )
            backward_micro_batch(accelerator, model, loss, scale, steps_after)
            if steps_after:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            with torch.no_grad():
                row = {
                    "loss/policy": pg.loss,
                    "loss/value": vf,
                    "loss/total": loss,
                    "policy/clipfrac": pg.clipfrac,
                    "policy/approxkl": pg.approxkl,
                    "policy/entropy": masked_mean(entropy_from_logits(logits), mask),
                    "val/ratio": pg.ratio,
                    "val/clipfrac": vf_clipfrac,
                }
            for key, value in row.items():
                stats.setdefault(key, []).append(accelerator.gather(value.detach()).mean().item())
    return {key: sum(v) / len(v) for key, v in stats.items()}


def _rollout_metrics(exp: Experience, accelerator: Any, kl_coef: float) -> dict[str, float]:
    mask = exp.rollout.response_mask.float()  # (B, R)
    non_score = (-kl_coef * exp.kl).sum(1)  # (B,)
    per_row = {
        "objective/kl": exp.kl.sum(1),
        "objective/entropy": (-exp.logprobs * mask).sum(1),
        "objective/non_score_reward": non_score,
        "objective/scores": exp.scores,
        "objective/rlhf_reward": non_score + exp.scores,
        "val/mean": (exp.values * mask).sum(1) / mask.sum(1).clamp(min=1),
        "response/length": mask.sum(1),
        "response/eos_fraction": exp.rollout.has_eos.float(),
    }
    return {k: accelerator.gather_for_metrics(v).float().mean().item() for k, v in per_row.items()}


def _optimizer(model: PolicyWithValue, config: PPOConfig) -> torch.optim.Optimizer:
    """AdamW with the value head in its own group (its own learning rate)."""
    head = {id(p) for p in model.value_head.parameters()}
    params = trainable_parameters(model).values()
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr": config.learning_rate},
        {
            "params": [p for p in model.value_head.parameters() if p.requires_grad],
            "lr": config.value_learning_rate,
        },
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)


def _prompt_sampler(
    prompts: Sequence[Sequence[ChatMessage]], config: PPOConfig, rank: int, world: int
) -> Any:
    """Endless shuffled passes over this process's share of the prompts."""
    shard = list(prompts[rank::world]) or list(prompts)
    rng = random.Random(config.seed + rank)
    while True:
        order = list(range(len(shard)))
        rng.shuffle(order)
        yield from (shard[i] for i in order)


def _build(base_model_dir: Path, config: PPOConfig, init_adapter: Path | None) -> PolicyWithValue:
    base = load_base_model(base_model_dir, base_dtype_of(config))
    peft_model = with_lora(base, config, init_adapter)
    if config.gradient_checkpointing:
        # Only the update's forward runs in training mode with gradients: sampling (eval mode,
        # KV cache) and scoring (no_grad) are not checkpointed.
        enable_gradient_checkpointing(peft_model)
    # Value head starts fresh each cycle: values are relative to this cycle's reward model.
    return PolicyWithValue(peft_model, ScalarHead(base.config.hidden_size, seed=config.seed))


def _save(
    model: PolicyWithValue,
    out_dir: Path,
    history: list[dict[str, float]],
    config: PPOConfig,
    gathered: dict[str, torch.Tensor] | None = None,
) -> tuple[Path, Path]:
    """The adapter, value head and metrics; the weights from ``gathered`` (the model's full
    state dict, ``learner.sharding.gathered_state``) when the model's own are shards."""
    adapter_dir = out_dir / "adapter"
    # Only the policy: the reward adapter on the same base would land in a subfolder.
    policy_only = [POLICY_ADAPTER]
    if gathered is None:
        model.policy.save_pretrained(str(adapter_dir), selected_adapters=policy_only)
        head = model.value_head.state_dict()
    else:
        model.policy.save_pretrained(
            str(adapter_dir),
            state_dict=sub_state(gathered, "policy."),
            selected_adapters=policy_only,
        )
        head = sub_state(gathered, "value_head.")
    head_path = out_dir / VALUE_HEAD_FILE
    save_file({k: v.contiguous() for k, v in head.items()}, str(head_path))
    (out_dir / "ppo_metrics.json").write_text(
        json.dumps({"history": history, "config": asdict(config)}, indent=2, default=str)
    )
    return adapter_dir, head_path


def _reached_kl_stop(config: PPOConfig, kl: float, step: int) -> bool:
    """Has the policy reached ``kl_stop``? Never on the first iteration: a cycle that starts
    from an earlier cycle's adapter always gets one update (the KL gate still judges it)."""
    return config.kl_stop is not None and step > 1 and kl >= config.kl_stop


def _trainable_state(model: PolicyWithValue) -> dict[str, torch.Tensor]:
    """A copy of the policy's trainable (LoRA) weights: a few MB, taken before each update."""
    return {
        name: param.detach().clone()
        for name, param in model.policy.named_parameters()
        if param.requires_grad
    }


@torch.no_grad()
def _restore(model: PolicyWithValue, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.policy.named_parameters())
    for name, value in state.items():
        params[name].copy_(value)


def _stop_at_kl(
    model: PolicyWithValue,
    before_last_update: dict[str, torch.Tensor] | None,
    history: list[dict[str, float]],
    config: PPOConfig,
    step: int,
    kl: float,
) -> None:
    """Stop: keep the last policy whose rollouts stayed under ``kl_stop``.

    One update can move the KL a long way (5.4 -> 10.3 nats in one ``concise`` acceptance
    cycle at lr 3e-4), so the policy that just crossed the stop may already be over the
    budget: the update before this rollout is undone when the rollout before it was under the
    stop. A start already over it (a cycle from an earlier adapter) keeps its one update."""
    last = history[-1]
    last["objective/kl_at_stop"] = kl
    under_before = last["objective/kl"] < float(config.kl_stop or 0.0)
    if before_last_update is not None and under_before:
        _restore(model, before_last_update)
        last["objective/update_undone"] = 1.0
        logger.info(
            "ppo stopped at iteration %d: rollout KL %.2f nats >= kl_stop %.2f; undid iteration "
            "%d's update (its rollouts: KL %.2f)",
            step,
            kl,
            config.kl_stop,
            step - 1,
            last["objective/kl"],
        )
        return
    logger.info(
        "ppo stopped before iteration %d's update: rollout KL %.2f nats >= kl_stop %.2f",
        step,
        kl,
        config.kl_stop,
    )


def run_ppo(
    base_model_dir: Path,
    reward_adapter_dir: Path,
    prompts: list[tuple[ChatMessage, ...]],
    config: PPOConfig,
    out_dir: Path,
    init_adapter: Path | None = None,
) -> PPOResult:
    """PPO the policy LoRA (from ``init_adapter`` or fresh) against the reward model."""

    _validate(config, prompts)
    accelerator = make_accelerator(config.device)
    set_seed(config.seed + accelerator.process_index)
    tokenizer = load_tokenizer(base_model_dir)
    model = _build(base_model_dir, config, init_adapter)
    # Attached before ``prepare``, frozen: DDP registers only parameters that require grad,
    # so it expects no gradient of the reward adapter.
    reward_model = RewardModel.attach(model.policy, reward_adapter_dir, REWARD_ADAPTER, tokenizer)
    reward_model = reward_model.to(accelerator.device)
    optimizer = _optimizer(model, config)
    prepare_for_sharding(accelerator, model)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    controller = _controller(config)
    next_prompt = _prompt_sampler(
        prompts, config, accelerator.process_index, accelerator.num_processes
    )
    generator = torch.Generator().manual_seed(config.seed)
    rollouts = open_rollout_engine(
        config.rollout_engine, base_model_dir, config, accelerator.device, accelerator.num_processes
    )
    history: list[dict[str, float]] = []
    before_update: dict[str, torch.Tensor] | None = None
    for step in range(1, config.num_steps + 1):
        unwrapped: PolicyWithValue = accelerator.unwrap_model(prepared)
        # Each prompt samples_per_prompt times, contiguous: the RLOO groups.
        batch = [
            prompt
            for prompt in (next(next_prompt) for _ in range(config.batch_size))
            for _ in range(config.samples_per_prompt)
        ]
        started = time.perf_counter()
        with root_unsharded(accelerator, prepared):  # FSDP: generate, forward of the unwrapped
            rollout = sample_as(config, unwrapped.policy, tokenizer, batch, rollouts)
            sampled = time.perf_counter()
            kl_coef = controller.value
            exp = _score_rollout(unwrapped, reward_model, batch, rollout, config, kl_coef)
        scored = time.perf_counter()
        metrics = _rollout_metrics(exp, accelerator, kl_coef)
        if _reached_kl_stop(config, metrics["objective/kl"], step):
            # Gathered metrics, so every process stops (and undoes) at the same iteration.
            _stop_at_kl(unwrapped, before_update, history, config, step, metrics["objective/kl"])
            break
        before_update = _trainable_state(unwrapped) if config.kl_stop is not None else None
        warming_up = config.advantage_estimator == "gae" and step <= config.value_warmup_steps
        metrics.update(
            _update(prepared, optimizer, accelerator, exp, config, generator, not warming_up)
        )
        updated = time.perf_counter()
        controller.update(metrics["objective/kl"], len(batch) * accelerator.num_processes)
        metrics.update(
            {
                "step": float(step),
                "objective/kl_coef": kl_coef,
                "time/rollout": sampled - started,
                "time/scoring": scored - sampled,
                "time/update": updated - scored,
                "time/step": updated - started,
            }
        )
        history.append(metrics)
        stage_progress(step, config.num_steps)
        if step % config.log_every == 0:
            logger.info(
                "ppo step %d: score %.3f kl %.4f rlhf_reward %.3f clipfrac %.3f "
                "(%.1fs: rollout %.1f, scoring %.1f, update %.1f)",
                step,
                metrics["objective/scores"],
                metrics["objective/kl"],
                metrics["objective/rlhf_reward"],
                metrics["policy/clipfrac"],
                metrics["time/step"],
                metrics["time/rollout"],
                metrics["time/scoring"],
                metrics["time/update"],
            )
    rollouts.close()
    accelerator.wait_for_everyone()
    adapter_dir, head_path = out_dir / "adapter", out_dir / VALUE_HEAD_FILE
    gathered = gathered_state(accelerator, prepared)  # every process: FSDP gathers collectively
    if accelerator.is_main_process:
        with unwrapped_for_saving(accelerator, prepared) as unwrapped:
            adapter_dir, head_path = _save(unwrapped, out_dir, history, config, gathered)
    accelerator.wait_for_everyone()
    return PPOResult(adapter_dir, history[-1], history, head_path)
