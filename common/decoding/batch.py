"""A fixed list of prompts decoded to the end together: the learner's rollouts.

The same steps as serving's engine loop without its queue: the distinct prompts are prefilled
in one left-padded forward (a prompt asked for several answers is prefilled once and its keys
and values repeated), then every unfinished row decodes one token per forward into the KV slab
with ``logits_to_keep=1``, and a row leaves the batch as soon as it ends (on any of
``stop_ids``, included in its tokens, or at ``max_new_tokens``), so the last steps run only the
longest answers. Sampling is serving's (``common.decoding.sampling``): temperature 0 is greedy,
else temperature and top-p, no top-k, one random stream per row from ``(seed, row)``.

A PEFT model decodes through whatever adapter is active (or none under ``disable_adapter()``),
through its LoRA layers; the learner's rollouts fold the adapter for the batch
(``common.decoding.folded_lora.folded_while``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from common.decoding.attention import gqa_attention_while
from common.decoding.kv_slab import KVSlab, layers_of
from common.decoding.sampling import make_generator, sample_rows
from common.decoding.steps import decode_step, pad_left, positions_from_mask


@dataclass(frozen=True)
class BatchSampling:
    """How every row of a batch samples: ``temperature`` 0 = greedy."""

    max_new_tokens: int
    temperature: float
    top_p: float
    stop_ids: Collection[int]
    seed: int | None = None  # None: fresh entropy per row


@dataclass
class _Rows:
    """The rows still decoding, in the KV slab's row order."""

    index: list[int]  # each slot's row in the caller's list
    generators: list[torch.Generator]  # by the caller's row


def decode_batch(
    model: Any, prompt_rows: Sequence[Sequence[int]], sampling: BatchSampling, pad_id: int = 0
) -> list[list[int]]:
    """The new tokens of each prompt row, each ending with its stop id if it met one.

    ``model`` is a transformers causal LM (or a PEFT model around one) in eval mode."""
    if any(not row for row in prompt_rows):
        raise ValueError("decode_batch: every prompt needs at least one token")
    answers: list[list[int]] = [[] for _ in prompt_rows]
    if not prompt_rows or sampling.max_new_tokens <= 0:
        return answers
    device = next(model.parameters()).device
    with torch.inference_mode(), gqa_attention_while(model):
        slab, logits = _prefill(model, prompt_rows, pad_id, device)
        rows = _Rows(
            index=list(range(len(prompt_rows))),
            generators=[make_generator(sampling.seed, i) for i in range(len(prompt_rows))],
        )
        while True:
            _append(answers, rows, _sample(logits, rows, sampling))
            _drop_finished(answers, rows, slab, sampling)
            if not rows.index:
                return answers
            tokens = [[answers[i][-1]] for i in rows.index]
            positions = [[len(prompt_rows[i]) + len(answers[i]) - 1] for i in rows.index]
            logits = decode_step(
                model,
                slab,
                torch.tensor(tokens, dtype=torch.long, device=device),  # (B, 1)
                torch.tensor(positions, dtype=torch.long, device=device),  # (B, 1)
            )


def _prefill(
    model: Any, prompt_rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[KVSlab, torch.Tensor]:
    """Prefill the distinct prompts once; a slab with one row per prompt row, and each row's
    next-token logits (B, V)."""
    distinct: dict[tuple[int, ...], int] = {}
    source = [distinct.setdefault(tuple(row), len(distinct)) for row in prompt_rows]
    ids, mask = pad_left(list(distinct), pad_id)  # (U, T)
    ids, mask = ids.to(device), mask.to(device)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions_from_mask(mask),
        past_key_values=DynamicCache(),
        use_cache=True,
        logits_to_keep=1,
    )
    repeat = torch.tensor(source, dtype=torch.long, device=device)  # (B,) each row's prompt
    kv = [(k[repeat], v[repeat]) for k, v in layers_of(out.past_key_values)]
    slab = KVSlab(len(kv), device)
    slab.append(kv, mask[repeat])
    return slab, out.logits[:, -1, :][repeat]


def _sample(logits: torch.Tensor, rows: _Rows, sampling: BatchSampling) -> list[int]:
    """One token per running row from its logits (B, V)."""
    if not bool(torch.isfinite(logits).all()):
        # Sampling would turn NaN into an arbitrary token: a broken policy must not train on it.
        raise FloatingPointError("non-finite logits while decoding a batch")
    count = len(rows.index)
    tokens = sample_rows(
        logits,
        [sampling.temperature] * count,
        [sampling.top_p] * count,
        [rows.generators[i] for i in rows.index],
    )
    return [int(t) for t in tokens.tolist()]


def _append(answers: list[list[int]], rows: _Rows, tokens: list[int]) -> None:
    for i, token in zip(rows.index, tokens, strict=True):
        answers[i].append(token)


def _drop_finished(
    answers: list[list[int]], rows: _Rows, slab: KVSlab, sampling: BatchSampling
) -> None:
    """Take the rows that just ended out of the batch (and their keys and values out of the
    slab, which reorders the remaining rows)."""
    stops = set(sampling.stop_ids)
    done = [
        slot
        for slot, i in enumerate(rows.index)
        if answers[i][-1] in stops or len(answers[i]) >= sampling.max_new_tokens
    ]
    if done:
        rows.index = [rows.index[slot] for slot in slab.drop(done)]
