"""The engine's attention against transformers' own (repeat_kv + SDPA), and in bfloat16."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.decoding.attention import gqa_sdpa_attention
from common.decoding.kv_slab import KVSlab


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


def test_a_bfloat16_prompt_attends_in_float32_and_answers_in_bfloat16() -> None:
    q, k, v, mask = inputs(torch.bfloat16)
    q = q.expand(-1, -1, 12, -1).contiguous()  # a 12-token prompt
    prompt_mask = mask.expand(-1, -1, 12, -1) & torch.ones((12, 12), dtype=torch.bool).tril()
    out, _ = gqa_sdpa_attention(torch.nn.Module(), q, k, v, prompt_mask)
    assert out.dtype == torch.bfloat16
    exact = reference(q.float(), k.float(), v.float(), prompt_mask).to(torch.bfloat16)
    assert torch.equal(out, exact)


def test_a_bfloat16_decode_step_matches_float32_attention_within_bfloat16_rounding() -> None:
    q, k, v, mask = inputs(torch.bfloat16)
    exact = reference(q.float(), k.float(), v.float(), mask)
    additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    for given in (mask, additive):
        out, _ = gqa_sdpa_attention(torch.nn.Module(), q, k, v, given)
        assert out.dtype == torch.bfloat16 and out.shape == (4, 1, 9, 16)
        # Scores and weights round to bfloat16 as in transformers' eager attention.
        assert torch.allclose(out.float(), exact, atol=0.03, rtol=0.02)
    unmasked, _ = gqa_sdpa_attention(torch.nn.Module(), q[1:], k[1:], v[1:], None)
    assert torch.allclose(unmasked.float(), exact[1:], atol=0.03, rtol=0.02)
    # Read through the KV slab's strided view, the step is the same.
    slab = KVSlab(layers=1)
    slab.append([(k[:, :, :11], v[:, :, :11])], torch.ones((4, 11), dtype=torch.long))
    mask2 = slab.begin_step()
    keys, values = slab.cache.update(k[:, :, 11:], v[:, :, 11:], 0)
    slab.end_step(mask2)
    assert keys.dtype == torch.bfloat16 and not keys.is_contiguous()
    via_slab, _ = gqa_sdpa_attention(torch.nn.Module(), q, keys, values, mask)
    assert torch.equal(via_slab, gqa_sdpa_attention(torch.nn.Module(), q, k, v, mask)[0])
