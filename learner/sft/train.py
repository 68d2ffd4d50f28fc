"""Supervised fine-tuning of a LoRA adapter on demonstrations (completion-only loss).

loss = - sum_{t in completion} log p(y_t | x, y_<t) / |completion tokens|: the prompt tokens are
context, not targets (labels -100), as TRL's ``completion_only_loss``. The saved adapter is a
plain PEFT LoRA adapter: serving loads it, and PPO can start from it (``init_adapter``).
Runs unchanged under ``accelerate launch``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from learner.data import SFTExample
from learner.metrics import stage_progress
from learner.modeling import (
    accumulation_scales,
    backward_micro_batch,
    enable_gradient_checkpointing,
    encode_pair,
    load_base_model,
    load_tokenizer,
    make_accelerator,
    mean_rows,
    optimizer_steps,
    pad_right,
    set_seed,
    trainable_parameters,
    with_lora,
)
from learner.precision import base_dtype_of
from learner.sft.config import SFTConfig
from learner.sharding import gathered_state, prepare_for_sharding, unwrapped_for_saving

logger = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class SFTResult:
    adapter_dir: Path
    metrics: dict[str, float]  # first/last epoch loss, counts
    history: list[dict[str, float]] = field(default_factory=list)  # one row per optimiser step


def _encode(tokenizer: Any, examples: list[SFTExample], max_length: int) -> list[dict[str, Any]]:
    rows = []
    for ex in examples:
        ids, prompt_len = encode_pair(tokenizer, ex.prompt, ex.completion, max_length)
        rows.append({"ids": ids, "labels": [IGNORE] * prompt_len + ids[prompt_len:]})
    return rows


def _collate(pad_id: int) -> Any:
    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_right([b["ids"] for b in batch], pad_id)
        labels, _ = pad_right([b["labels"] for b in batch], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL of the label tokens. logits (B, T, V), labels (B, T) with -100 = ignore."""
    # float32 logits (a bfloat16 base's are upcast) so the log-softmax keeps float32 precision.
    shifted = logits[:, :-1].float().reshape(-1, logits.shape[-1])  # (B*(T-1), V): predicts t + 1
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def run_sft(
    base_model_dir: Path,
    examples: list[SFTExample],
    config: SFTConfig,
    out_dir: Path,
    init_adapter: Path | None = None,
) -> SFTResult:
    """Train a LoRA adapter on ``examples``; save it to ``out_dir / "adapter"``."""

    if not examples:
        raise ValueError("no demonstrations to train on")
    accelerator = make_accelerator(config.device)
    set_seed(config.seed)
    tokenizer = load_tokenizer(base_model_dir)
    model = with_lora(load_base_model(base_model_dir, base_dtype_of(config)), config, init_adapter)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    loader: DataLoader[Any] = DataLoader(
        _encode(tokenizer, examples, config.max_length),  # type: ignore[arg-type]
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=_collate(tokenizer.pad_token_id),
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.AdamW(
        trainable_parameters(model).values(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    prepare_for_sharding(accelerator, model)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accumulation = config.gradient_accumulation_steps
    total_steps = optimizer_steps(len(loader), accumulation) * config.num_epochs
    model.train()
    history: list[dict[str, float]] = []
    epoch_losses: list[float] = []
    for epoch in range(config.num_epochs):
        losses, group = [], []
        plan = accumulation_scales(len(loader), accumulation)
        for batch, (scale, steps_after) in zip(loader, plan, strict=True):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            loss = completion_loss(logits, batch["labels"])
            backward_micro_batch(accelerator, model, loss, scale, steps_after)
            group.append({"loss": accelerator.gather(loss.detach()).mean().item()})
            if not steps_after:
                continue
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            value = mean_rows(group)["loss"]
            group = []
            losses.append(value)
            history.append({"step": float(len(history) + 1), "epoch": float(epoch), "loss": value})
            stage_progress(len(history), total_steps)
            if len(history) % config.log_every == 0:
                logger.info("sft step %d loss %.4f", len(history), value)
        epoch_losses.append(sum(losses) / len(losses))
    metrics = {
        "loss/first_epoch": epoch_losses[0],
        "loss/last_epoch": epoch_losses[-1],
        "loss": history[-1]["loss"],
        "train_count": float(len(examples)),
    }
    adapter_dir = out_dir / "adapter"
    accelerator.wait_for_everyone()
    gathered = gathered_state(accelerator, model)  # every process: FSDP gathers collectively
    if accelerator.is_main_process:
        with unwrapped_for_saving(accelerator, model) as peft_model:
            peft_model.save_pretrained(str(adapter_dir), state_dict=gathered)
        (out_dir / "sft_metrics.json").write_text(
            json.dumps({"metrics": metrics, "config": asdict(config)}, indent=2, default=str)
        )
    accelerator.wait_for_everyone()
    return SFTResult(adapter_dir=adapter_dir, metrics=metrics, history=history)
