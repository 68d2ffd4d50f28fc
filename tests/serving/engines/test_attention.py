"""The engine's attention against transformers' own (repeat_kv + SDPA), and in bfloat16."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from serving.engines.attention import gqa_sdpa_attention
from serving.engines.kv_slab import KVSlab


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """What transformers' sdpa does with a mask: one copy of K/V per query head."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn((4, 9, 1, 16), generator=g)
    k, v = torch.randn((4, 3, 12, 16), generator=g), torch.randn((4, 3, 12, 16), generator=g)
    mask = torch.ones((4, 1, 1, 12), dtype=torch.bool)
    mask[0, ..., :5] = False  # a left-padded row
    return q.to(dtype), k.to(dtype), v.to(dtype), mask


def test_grouped_query_attention_equals_the_copying_kind() -> None:
    q, k, v, mask = inputs(torch.float32)
    out, weights = gqa_sdpa_attention(torch.nn.Module(), q, k, v, mask)
    assert weights is None and out.shape == (4, 1, 9, 16)
    assert torch.equal(out, reference(q, k, v, mask))


def test_bfloat16_attends_in_float32_and_answers_in_bfloat16() -> None:
    q, k, v, mask = inputs(torch.bfloat16)
    out, _ = gqa_sdpa_attention(torch.nn.Module(), q, k, v, mask)
    assert out.dtype == torch.bfloat16
    exact = reference(q.float(), k.float(), v.float(), mask).to(torch.bfloat16)
    assert torch.equal(out, exact)
    # The KV slab keeps a bfloat16 model's cache in float32, ready for that attention.
    slab = KVSlab(layers=1)
    slab.append([(k, v)], torch.ones((4, 12), dtype=torch.long))
    mask2 = slab.begin_step()
    keys, _ = slab.cache.update(k[:, :, :1], v[:, :, :1], 0)
    slab.end_step(mask2)
    assert keys.dtype == torch.float32 and torch.equal(keys[:, :, :12], k.float())
