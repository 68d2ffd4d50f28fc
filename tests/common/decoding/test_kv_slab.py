"""The preallocated KV cache against a reference built with plain concatenation."""

from __future__ import annotations

import torch

from common.decoding.kv_slab import KVSlab

HEADS, DIM = 2, 3


def prefill(
    rows: int, width: int, pad: list[int], seed: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """One layer's keys/values (rows, H, width, D) and a left-padded mask (rows, width)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn((rows, HEADS, width, DIM), generator=g)
    mask = torch.ones((rows, width), dtype=torch.long)
    for r, p in enumerate(pad):
        mask[r, :p] = 0
        k[r, :, :p] = 0.0
    return [(k, k * 2)], mask


def step(slab: KVSlab, seed: int) -> torch.Tensor:
    """One decode step through the cache contract; returns the token's keys (rows, H, 1, D)."""
    new = torch.randn((slab.rows, HEADS, 1, DIM), generator=torch.Generator().manual_seed(seed))
    mask = slab.begin_step()
    keys, values = slab.cache.update(new, new * 2, 0)
    assert keys.shape == (slab.rows, HEADS, mask.shape[1], DIM)
    assert torch.equal(values, keys * 2)
    slab.end_step(mask)
    return new


def live_keys(slab: KVSlab) -> tuple[torch.Tensor, torch.Tensor]:
    mask = slab.begin_step()
    blank = torch.zeros((slab.rows, HEADS, 1, DIM))
    keys, _ = slab.write(0, blank, blank)
    slab._pending = 0  # look only: this step is not committed
    return keys[:, :, :-1], mask[:, :-1]


def test_rows_join_step_and_leave_like_a_concatenated_cache() -> None:
    slab = KVSlab(layers=1)
    kv, mask = prefill(2, 4, [0, 1], seed=1)
    slab.append(kv, mask)
    ref_k, ref_mask = kv[0][0].clone(), mask.clone()
    for s in range(3):
        new = step(slab, seed=10 + s)
        ref_k = torch.cat([ref_k, new], dim=2)
        ref_mask = torch.cat([ref_mask, torch.ones((2, 1), dtype=torch.long)], dim=1)
    # A longer prompt joins: the running rows grow zero padding on the left.
    kv2, mask2 = prefill(1, 9, [0], seed=2)
    slab.append(kv2, mask2)
    pad = 9 - ref_k.shape[2]
    ref_k = torch.cat([torch.nn.functional.pad(ref_k, (0, 0, pad, 0)), kv2[0][0]], dim=0)
    ref_mask = torch.cat([torch.nn.functional.pad(ref_mask, (pad, 0)), mask2], dim=0)
    keys, got_mask = live_keys(slab)
    assert torch.equal(keys, ref_k) and torch.equal(got_mask, ref_mask)
    # Row 0 finishes: the last row takes its slot, and the order says so.
    order = slab.drop([0])
    assert order == [2, 1]
    keys, got_mask = live_keys(slab)
    assert torch.equal(keys, ref_k[order]) and torch.equal(got_mask, ref_mask[order])
    # The long row finishes: the columns that were padding for the one left are dropped.
    assert slab.drop([0]) == [1]
    keys, got_mask = live_keys(slab)
    assert torch.equal(keys, ref_k[[1], :, pad + 1 :]) and got_mask.tolist() == [[1] * 6]


def test_a_prompt_s_common_padding_is_not_stored() -> None:
    slab = KVSlab(layers=1)
    kv, mask = prefill(2, 6, [2, 3], seed=4)
    slab.append(kv, mask)
    keys, got_mask = live_keys(slab)
    assert torch.equal(keys, kv[0][0][:, :, 2:]) and torch.equal(got_mask, mask[:, 2:])


def test_capacity_grows_without_losing_history() -> None:
    slab = KVSlab(layers=1)
    kv, mask = prefill(3, 5, [0, 0, 0], seed=3)
    slab.append(kv, mask)
    ref = kv[0][0]
    for s in range(200):  # far past the first buffers' 64 columns
        ref = torch.cat([ref, step(slab, seed=100 + s)], dim=2)
    for r in range(20):  # and past their 8 rows
        kv_r, mask_r = prefill(1, 205, [200], seed=400 + r)
        slab.append(kv_r, mask_r)
        ref = torch.cat([ref, kv_r[0][0]], dim=0)
    keys, got_mask = live_keys(slab)
    assert torch.equal(keys, ref)
    assert got_mask.shape == (23, 205)


def test_an_emptied_batch_restarts_in_place() -> None:
    slab = KVSlab(layers=1)
    kv, mask = prefill(2, 6, [0, 0], seed=5)
    slab.append(kv, mask)
    buffer = slab._keys[0]
    assert slab.drop([0, 1]) == [] and slab.rows == 0
    slab.append(*prefill(1, 6, [0], seed=6))
    assert slab._keys[0] is buffer  # no reallocation for the next wave
    assert slab.rows == 1 and slab.width == 6
