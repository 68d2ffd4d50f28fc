"""Batch surgery on a decoder KV cache, for continuous batching at step granularity.

The running batch is left-padded: every row's cache ends at the same column and padding sits on
the left, masked out by the 2-D attention mask (as ``model.generate`` does for batched prompts).
New rows are prefilled separately and joined by left-padding the shorter side; finished rows
are dropped by index, and columns that are padding for every remaining row are trimmed so the
cache does not keep growing with dead history. Same idea as Orca's iteration-level scheduling
(Yu et al., OSDI 2022), without paged memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

# One (keys, values) pair per layer, each (B, H_kv, T, D).
KV = list[tuple[torch.Tensor, torch.Tensor]]


def to_cache(kv: KV) -> DynamicCache:
    return DynamicCache(ddp_cache_data=kv)


def from_cache(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(kv: KV, mask: torch.Tensor, width: int) -> tuple[KV, torch.Tensor]:
    extra = width - mask.shape[1]
    if extra == 0:
        return kv, mask
    padded = [(F.pad(k, (0, 0, extra, 0)), F.pad(v, (0, 0, extra, 0))) for k, v in kv]
    return padded, F.pad(mask, (extra, 0))


def join(a: KV, a_mask: torch.Tensor, b: KV, b_mask: torch.Tensor) -> tuple[KV, torch.Tensor]:
    """Concatenate two left-padded batches along the batch axis (masks are (B, T))."""
    width = max(a_mask.shape[1], b_mask.shape[1])
    a, a_mask = _left_pad(a, a_mask, width)
    b, b_mask = _left_pad(b, b_mask, width)
    kv = [
        (torch.cat([ka, kb], dim=0), torch.cat([va, vb], dim=0))
        for (ka, va), (kb, vb) in zip(a, b, strict=True)
    ]
    return kv, torch.cat([a_mask, b_mask], dim=0)


def select(kv: KV, mask: torch.Tensor, rows: torch.Tensor) -> tuple[KV, torch.Tensor]:
    """Keep ``rows`` (in that order) and trim columns that are padding for every kept row."""
    mask = mask[rows]
    live = mask.any(dim=0).nonzero()
    start = int(live[0]) if live.numel() else mask.shape[1]
    kv = [(k[rows, :, start:], v[rows, :, start:]) for k, v in kv]
    return kv, mask[:, start:]
