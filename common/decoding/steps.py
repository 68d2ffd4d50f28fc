"""The two forwards of batched decoding: a left-padded prompt batch, and one token per row.

The batch is left-padded, as ``model.generate`` pads batched prompts: every row's newest token
sits in the last column, so one decode step feeds one column. Positions skip the padding (a
row's first real token is position 0), as ``generate`` computes them from the attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from common.decoding.kv_slab import KVSlab


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows. Returns input_ids (B, T) and attention_mask (B, T), on the CPU."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) attention mask -> (B, T) positions that skip left padding (0 on the padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def decode_step(
    model: Any,
    slab: KVSlab,
    tokens: torch.Tensor,  # (B, 1) each running row's newest token
    positions: torch.Tensor,  # (B, 1) its position
    **forward_kwargs: Any,
) -> torch.Tensor:  # (B, V)
    """One forward of one new token per row of ``slab``; the logits of the next token.

    ``logits_to_keep=1``: the LM head runs on the newest position only (with a 49k vocabulary
    it is a large share of a small model's step)."""
    mask = slab.begin_step()  # (B, T + 1)
    out = model(
        input_ids=tokens,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=slab.cache,
        use_cache=True,
        logits_to_keep=1,
        **forward_kwargs,
    )
    slab.end_step(mask)
    return out.logits[:, -1, :]
