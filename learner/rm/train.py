"""Train the reward model on comparisons (runs unchanged under ``accelerate launch``).

Steps: 1) split comparisons by pair_id into train / held-out (deterministic by seed, so all
comparisons of one pair or ranking land on the same side); 2) tokenise prompt + answer + EOS;
3) minimise the weighted Bradley-Terry loss (``learner.rm.loss``) with AdamW on the LoRA and
head parameters; 4) score the held-out pairs (accuracy, margin, reward statistics); 5) the main
process saves the adapter + head once, with the reward statistics of the trained model over a
sample of its training answers (``RewardNorm``: PPO and the evaluation use standard units).
Ties are comparisons with target 0.5; thumbs and both-bad votes arrive as ``Rating`` rows and
are trained by the pointwise rating loss, in batches of their own interleaved at random with the
comparison batches (``learner.rm.loss``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from learner.data import Comparison, Rating
from learner.metrics import stage_progress
from learner.modeling import (
    accumulation_scales,
    backward_micro_batch,
    enable_gradient_checkpointing,
    encode_pair,
    make_accelerator,
    mean_rows,
    optimizer_steps,
    pad_right_pairs,
    set_seed,
    trainable_parameters,
)
from learner.rm.config import RewardConfig
from learner.rm.loss import pairwise_loss, pairwise_stats, rating_loss
from learner.rm.model import RewardModel, RewardNorm
from learner.rm.reliability import PrequentialWeights
from learner.sharding import gathered_state, prepare_for_sharding, unwrapped_for_saving

logger = logging.getLogger(__name__)


@dataclass
class RewardResult:
    adapter_dir: Path
    metrics: dict[str, float]  # held-out metrics (train metrics if nothing could be held out)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per optimiser step


@dataclass(frozen=True)
class _Encoded:
    chosen: tuple[list[int], int]  # token ids, prompt length (where the answer starts)
    rejected: tuple[list[int], int]
    weight: float
    target: float
    user: str | None


@dataclass(frozen=True)
class _EncodedRating:
    ids: tuple[list[int], int]
    good: float
    weight: float


def _pad(rows: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``answer_mask`` of encoded rows."""
    ids, mask, answer = pad_right_pairs(rows, pad_id)
    return {"input_ids": ids, "attention_mask": mask, "answer_mask": answer}


def _rewards(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return model(batch["input_ids"], batch["attention_mask"], batch["answer_mask"])


def split_by_pair(
    comparisons: Sequence[Comparison], eval_fraction: float, min_eval_pairs: int, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """Train / held-out split by pair_id, deterministic given the seed and the set of pairs."""
    pair_ids = sorted({c.pair_id for c in comparisons})
    random.Random(seed).shuffle(pair_ids)
    n_eval = round(eval_fraction * len(pair_ids))
    if eval_fraction > 0 and len(pair_ids) >= 2 * min_eval_pairs:
        n_eval = max(n_eval, min_eval_pairs)
    held_out = set(pair_ids[:n_eval])
    train = [c for c in comparisons if c.pair_id not in held_out]
    evaluation = [c for c in comparisons if c.pair_id in held_out]
    return train, evaluation


def _encode(tokenizer: Any, items: Sequence[Comparison], max_length: int) -> list[_Encoded]:
    return [
        _Encoded(
            chosen=encode_pair(tokenizer, c.prompt, c.chosen, max_length),
            rejected=encode_pair(tokenizer, c.prompt, c.rejected, max_length),
            weight=c.weight,
            target=c.target,
            user=c.user_id,
        )
        for c in items
    ]


def _encode_ratings(
    tokenizer: Any, items: Sequence[Rating], max_length: int
) -> list[_EncodedRating]:
    return [
        _EncodedRating(
            encode_pair(tokenizer, r.prompt, r.response, max_length), float(r.good), r.weight
        )
        for r in items
    ]


def _collate(pad_id: int) -> Any:
    def collate(batch: list[_Encoded]) -> dict[str, Any]:
        # Chosen rows first, then rejected rows: one forward scores both halves.
        rows = _pad([b.chosen for b in batch] + [b.rejected for b in batch], pad_id)
        weights = torch.tensor([b.weight for b in batch], dtype=torch.float32)
        targets = torch.tensor([b.target for b in batch], dtype=torch.float32)
        # Users stay a list (strings): the training loop turns them into reliability weights.
        return rows | {
            "weights": weights,
            "targets": targets,
            "users": [b.user for b in batch],
        }

    return collate


def _collate_ratings(pad_id: int) -> Any:
    def collate(batch: list[_EncodedRating]) -> dict[str, torch.Tensor]:
        good = torch.tensor([b.good for b in batch], dtype=torch.float32)
        weights = torch.tensor([b.weight for b in batch], dtype=torch.float32)
        return _pad([b.ids for b in batch], pad_id) | {"good": good, "weights": weights}

    return collate


def _loss(
    model: Any,
    batch: dict[str, Any],
    config: RewardConfig,
    reliability: PrequentialWeights | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rewards = _rewards(model, batch)  # (2B,)
    chosen, rejected = rewards.chunk(2)  # (B,), (B,)
    weights = batch["weights"]
    if reliability is not None:
        margins = chosen.detach() - rejected.detach()
        weights = weights * reliability.before_step(batch["users"], margins, batch["targets"])
    loss = pairwise_loss(chosen, rejected, weights, batch["targets"])
    # The rating threshold takes part in every step's graph (with zero weight here): under
    # DistributedDataParallel a parameter that gets no gradient in a step is an error.
    loss = loss + 0.0 * _threshold(model)
    if config.center_rewards_coefficient is not None:
        loss = loss + config.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
    return loss, chosen, rejected


def _rating_loss(model: Any, batch: dict[str, torch.Tensor], config: RewardConfig) -> torch.Tensor:
    rewards = _rewards(model, batch)  # (B,)
    threshold = _threshold(model)
    return config.rating_weight * rating_loss(rewards, batch["good"], threshold, batch["weights"])


def _threshold(model: Any) -> torch.Tensor:
    """The rating threshold of a reward model, wrapped for distributed training or not; read by
    calling its module, which under FSDP unshards it (``RatingThreshold``)."""
    reward_model = model if hasattr(model, "rating") else model.module
    threshold: torch.Tensor = reward_model.rating()
    return threshold


@torch.no_grad()
def _evaluate(
    model: Any, loader: DataLoader, accelerator: Any, config: RewardConfig
) -> dict[str, float]:
    model.eval()
    chosen_all, rejected_all, weights_all, targets_all = [], [], [], []
    for batch in loader:
        _, chosen, rejected = _loss(model, batch, config)
        gathered = accelerator.gather_for_metrics(
            (chosen, rejected, batch["weights"], batch["targets"])
        )
        chosen_all.append(gathered[0])
        rejected_all.append(gathered[1])
        weights_all.append(gathered[2])
        targets_all.append(gathered[3])
    model.train()
    chosen_t, rejected_t = torch.cat(chosen_all), torch.cat(rejected_all)
    targets_t = torch.cat(targets_all)
    metrics = pairwise_stats(chosen_t, rejected_t, targets_t)
    metrics["loss"] = pairwise_loss(chosen_t, rejected_t, torch.cat(weights_all), targets_t).item()
    return metrics


@torch.no_grad()
def _fit_norm(model: Any, loader: DataLoader, accelerator: Any) -> RewardNorm:
    """Reward statistics of the trained model over (a sample of) its training answers."""
    model.eval()
    rewards = []
    for batch in loader:
        # Gather per comparison (B rows each), not the (2B,) stack: gather_for_metrics trims the
        # last batch's padding in units of dataset items.
        chosen, rejected = _rewards(model, batch).chunk(2)
        rewards += list(accelerator.gather_for_metrics((chosen, rejected)))
    model.train()
    return RewardNorm.fit(torch.cat(rewards).float().cpu())


def _schedule(config: RewardConfig, total_steps: int) -> Any:
    """LR multiplier per step: linear warm-up, then constant or cosine decay to 10 %."""
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _epoch_plan(n_pairs: int, n_ratings: int, seed: int) -> list[str]:
    """The order of comparison and rating batches in one epoch: interleaved at random."""
    plan = ["pairs"] * n_pairs + ["ratings"] * n_ratings
    random.Random(seed).shuffle(plan)
    return plan


def train_reward_model(
    base_model_dir: Path,
    comparisons: list[Comparison],
    config: RewardConfig,
    out_dir: Path,
    init_adapter: Path | None = None,
    ratings: list[Rating] | None = None,
) -> RewardResult:
    """Train base + LoRA + scalar head on ``comparisons`` (and ``ratings`` when given, weighted
    by ``config.rating_weight``); save to ``out_dir / "adapter"``."""

    if not comparisons:
        raise ValueError("no comparisons to train the reward model on")
    accelerator = make_accelerator(config.device)
    set_seed(config.seed)
    train_set, eval_set = split_by_pair(
        comparisons, config.eval_fraction, config.min_eval_pairs, config.seed
    )
    if not train_set:
        raise ValueError("every pair was held out: nothing left to train on (lower eval_fraction)")
    # Ratings of held-out pairs stay out of training too (they would leak the held-out answers).
    held_pairs = {c.pair_id for c in eval_set}
    train_ratings = [r for r in ratings or [] if r.pair_id not in held_pairs]
    if config.rating_weight <= 0:
        train_ratings = []
    model = RewardModel.create(
        base_model_dir, config, init_adapter, config.head_init, config.pooling
    )
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model.backbone)
    tokenizer = model.tokenizer
    collate = _collate(tokenizer.pad_token_id)
    train_encoded = _encode(tokenizer, train_set, config.max_length)
    train_loader: DataLoader[Any] = DataLoader(
        train_encoded,  # type: ignore[arg-type]
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(config.seed),
    )
    # Nothing held out (too few pairs): report metrics on the training pairs instead.
    eval_items = eval_set or train_set
    eval_loader: DataLoader[Any] = DataLoader(
        _encode(tokenizer, eval_items, config.max_length),  # type: ignore[arg-type]
        batch_size=config.eval_batch_size,
        collate_fn=collate,
    )
    optimizer = torch.optim.AdamW(
        _param_groups(model, config), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    prepare_for_sharding(accelerator, model)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loader
    )
    rating_loader = _rating_loader(tokenizer, train_ratings, config, accelerator)
    rating_batches = len(rating_loader) if rating_loader is not None else 0
    accumulation = config.gradient_accumulation_steps
    micro_per_epoch = len(train_loader) + rating_batches
    total = optimizer_steps(micro_per_epoch, accumulation) * config.num_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total))
    reliability = (
        PrequentialWeights(
            config.reliability_floor,
            config.reliability_prior_votes,
            config.reliability_warmup,
            len(train_loader),
        )
        if config.user_reliability
        else None
    )
    history: list[dict[str, float]] = []
    step, started = 0, time.perf_counter()
    model.train()
    for epoch in range(config.num_epochs):
        pairs_iter, ratings_iter = iter(train_loader), iter(rating_loader or [])
        plan = _epoch_plan(len(train_loader), rating_batches, config.seed + epoch)
        group: list[dict[str, float]] = []
        for kind, (scale, steps_after) in zip(
            plan, accumulation_scales(micro_per_epoch, accumulation), strict=True
        ):
            if kind == "ratings":
                loss = _rating_loss(model, next(ratings_iter), config)
                row = {"rating_loss": accelerator.gather(loss.detach()).mean().item()}
            else:
                loss, chosen, rejected = _loss(model, next(pairs_iter), config, reliability)
                row = _step_row(accelerator, loss, chosen, rejected)
            backward_micro_batch(accelerator, model, loss, scale, steps_after)
            group.append(row)
            if not steps_after:
                continue
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            row, group = mean_rows(group), []
            history.append(row | {"step": float(step), "epoch": float(epoch)})
            stage_progress(step, total)
            if step % config.log_every == 0:
                logger.info("reward step %d/%d %s", step, total, _fmt_row(row))
    seconds = time.perf_counter() - started
    metrics = _evaluate(model, eval_loader, accelerator, config)
    norm_loader = accelerator.prepare(
        DataLoader(
            train_encoded[: config.norm_sample],  # type: ignore[arg-type]
            batch_size=config.eval_batch_size,
            collate_fn=collate,
        )
    )
    norm = _fit_norm(model, norm_loader, accelerator)
    accelerator.unwrap_model(model).norm = norm
    pair_rows = [h for h in history if "loss" in h]
    metrics.update(
        {
            "norm/mean": norm.mean,
            "norm/std": norm.std,
            "train_count": float(len(train_set)),
            "eval_count": float(len(eval_set)),
            "rating_count": float(len(train_ratings)),
            "train_pairs_per_second": len(train_set) * config.num_epochs / max(seconds, 1e-9),
            "train_loss": pair_rows[-1]["loss"] if pair_rows else float("nan"),
        }
        | (reliability.tracker.summary() if reliability is not None else {})
    )
    adapter_dir = out_dir / "adapter"
    accelerator.wait_for_everyone()
    gathered = gathered_state(accelerator, model)  # every process: FSDP gathers collectively
    if accelerator.is_main_process:
        with unwrapped_for_saving(accelerator, model) as reward_model:
            reward_model.save(adapter_dir, gathered)
        (out_dir / "reward_metrics.json").write_text(
            json.dumps({"metrics": metrics, "config": asdict(config)}, indent=2, default=str)
        )
    accelerator.wait_for_everyone()
    logger.info("reward model saved to %s: %s", adapter_dir, metrics)
    return RewardResult(adapter_dir=adapter_dir, metrics=metrics, history=history)


def _param_groups(model: Any, config: RewardConfig) -> list[dict[str, Any]]:
    """The LoRA body at ``learning_rate``; the score head (and the rating threshold) at
    ``head_learning_rate`` when set. A zero-initialised head moves at most one learning rate per
    Adam step: at the body's 1e-4 a weak preference leaves it near zero after one epoch."""
    params = trainable_parameters(model)
    head = {n: p for n, p in params.items() if n.startswith(("head.", "rating."))}
    body = [p for n, p in params.items() if n not in head]
    if config.head_learning_rate is None or not head:
        return [{"params": list(params.values())}]
    return [{"params": body}, {"params": list(head.values()), "lr": config.head_learning_rate}]


def _rating_loader(
    tokenizer: Any, ratings: list[Rating], config: RewardConfig, accelerator: Any
) -> Any:
    if not ratings:
        return None
    loader: DataLoader[Any] = DataLoader(
        _encode_ratings(tokenizer, ratings, config.max_length),  # type: ignore[arg-type]
        batch_size=config.batch_size * 2,  # as many rows as a comparison batch
        shuffle=True,
        collate_fn=_collate_ratings(tokenizer.pad_token_id),
        generator=torch.Generator().manual_seed(config.seed + 1),
    )
    return accelerator.prepare(loader)


@torch.no_grad()
def _step_row(
    accelerator: Any, loss: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor
) -> dict[str, float]:
    return {
        "loss": accelerator.gather(loss.detach()).mean().item(),
        "accuracy": accelerator.gather((chosen > rejected).float().mean()).mean().item(),
        "margin": accelerator.gather((chosen - rejected).mean()).mean().item(),
    }


def _fmt_row(row: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in row.items())
