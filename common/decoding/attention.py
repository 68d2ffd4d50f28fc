"""Attention for batched decoding: PyTorch SDPA with grouped-query heads, without copying the cache.

transformers' ``sdpa`` attention expands the keys and values of grouped-query models (SmolLM2:
9 query heads, 3 key/value heads) to one copy per query head whenever an attention mask is
given, and batched decoding always gives one (its batch is left-padded). That copies the whole KV
cache three times per layer and step: at 200 cached tokens and 128 rows it took 40 ms per layer
on this CPU against 2.3 ms for ``scaled_dot_product_attention(..., enable_gqa=True)`` on the
same tensors, with bit-identical output (profile in docs/measurements.md, "Where a decode step's
time goes"). Grouped-query attention: Ainslie et al. 2023, "GQA: Training Generalized
Multi-Query Transformer Models from Multi-Head Checkpoints", https://arxiv.org/abs/2305.13245.

A bfloat16 or float16 decode step on the CPU (one token per row) skips SDPA: two batched
matmuls around a float32 softmax read the bfloat16 cache directly (``_decode_step_reduced``).

Registered with transformers' attention and mask interfaces under its own name, so the model
keeps transformers' sdpa masks and only the kernel call changes; models that cannot switch keep
their own attention (logged).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

NAME = "rlhf_gqa_sdpa"


def gqa_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, Hq, Q, D)
    key: torch.Tensor,  # (B, Hkv, T, D), may be a strided view of a larger cache
    value: torch.Tensor,  # (B, Hkv, T, D)
    attention_mask: torch.Tensor | None,  # (B, 1, Q, T) bool or additive float, or None
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: returns (B, Q, Hq, D) and no weights."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    dtype = query.dtype
    reduced = query.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
    if reduced and query.shape[2] == 1:
        return _decode_step_reduced(query, key, value, attention_mask, scaling), None
    if reduced:
        # PyTorch's CPU attention kernel in bfloat16 ran 2.6x slower than in float32 here,
        # while bfloat16 matmuls ran 3.3x faster: a prompt attends in float32.
        query, key, value = query.float(), key.float(), value.float()
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        # Without a mask, a prompt attends causally; one decoded token attends to all it has.
        is_causal=bool(causal and attention_mask is None and query.shape[2] > 1),
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.to(dtype).transpose(1, 2).contiguous(), None


def _decode_step_reduced(
    query: torch.Tensor,  # (B, Hq, 1, D) bfloat16 or float16
    key: torch.Tensor,  # (B, Hkv, T, D), a strided view of the KV slab
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # (B, 1, 1, T) bool or additive float, or None
    scaling: float | None,
) -> torch.Tensor:  # (B, 1, Hq, D)
    """One decoded token per row in reduced precision, as transformers' eager attention computes
    it (matmuls in the model's dtype, softmax in float32), with the query heads of a key/value
    head stacked as the rows of one matrix instead of copying the cache per query head.

    PyTorch's CPU SDPA kernel ran a bfloat16 decode step 2.6x slower than float32 on this
    CPU, so the cache was kept in float32 for it, which doubled the bytes every step reads.
    Here the cache stays in bfloat16; the batched matmuls want contiguous operands, and one
    copy of the strided slab view costs less than the kernel's own handling of it (at 150
    cached tokens and 128 rows: 3.3 ms a layer against 4.8 ms for float32 SDPA)."""
    rows, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else dim**-0.5
    grouped = (query * scale).view(rows, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, key.contiguous().transpose(-1, -2)).float()  # (B, Hkv, G, T)
    if attention_mask is not None:
        mask = attention_mask.view(rows, 1, 1, length)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(weights, value.contiguous())  # (B, Hkv, G, D)
    return out.view(rows, 1, heads, dim)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_gqa_attention(model: Any) -> bool:
    """Switch a transformers model that runs ``sdpa`` to this attention; False if it cannot."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        logger.info("model attention is %s; keeping it", model.config._attn_implementation)
        return False
    register()
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, TypeError, AttributeError) as exc:
        logger.warning("keeping transformers' sdpa attention: %s", exc)
        return False
    return True


@contextlib.contextmanager
def gqa_attention_while(model: Any) -> Iterator[bool]:
    """This attention for the duration of the block, the model's own again after it; yields
    whether it switched. For a model that also trains (the learner's policy): its training
    forward keeps transformers' attention, so only decoding changes."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    before = getattr(model.config, "_attn_implementation", None)
    switched = before == "sdpa" and use_gqa_attention(model)
    try:
        yield switched
    finally:
        if switched:
            model.set_attn_implementation(before)
