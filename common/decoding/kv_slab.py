"""The running batch's KV cache in preallocated buffers, written in place.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``, which
copies the whole cache of every layer on every step (29 % of a decode step at 100 cached tokens
and 128 rows on this CPU), and dropping a finished row copied it again. Here each layer owns
one buffer per keys and values, (row capacity, KV heads, column capacity, head dim); a step
writes one column and attention reads a strided view of the live region, rows ``[0, rows)`` and
columns ``[start, end)``. Capacities grow geometrically, so the copies are amortised O(1) per
step (as in vLLM's preallocated KV blocks, Kwon et al., SOSP 2023, without the paging).

The batch stays left-padded, as ``model.generate`` pads batched prompts: every row's history
ends at column ``end``, padding sits on the left and the 2-D attention mask hides it. New rows
join right-aligned at ``end``; a finished row's slot is refilled by one of the last rows (its
order changes, so callers reorder their rows with the returned order); columns that became
padding for every row are dropped by moving ``start``.

Invariant: every column of ``[start, end)`` of every live row holds finite numbers (model output
or zeros), so the masked-out positions cannot turn attention into NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

MIN_ROWS = 8
MIN_COLUMNS = 64


class KVSlab:
    def __init__(self, layers: int, device: torch.device | str = "cpu") -> None:
        self.layers = layers
        self.device = torch.device(device)
        self.rows = 0
        self.start = 0
        self.end = 0
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # (rows, width)
        self._keys: list[torch.Tensor] = []  # per layer (row cap, H, column cap, D)
        self._values: list[torch.Tensor] = []
        self._pending = 0  # columns the forward in progress writes at ``end``
        self._shape: tuple[int, int, torch.dtype] | None = None  # (KV heads, head dim, dtype)
        self.cache = Cache(layers=[_SlabLayer(self, i) for i in range(layers)])

    @property
    def width(self) -> int:
        return self.end - self.start

    def clear(self) -> None:
        """Forget every row (the buffers stay for the next batch)."""
        # An empty batch restarts mid-buffer, so the next join fits without moving anything.
        middle = self._capacity()[1] // 2
        self.rows, self.start, self.end, self._pending = 0, middle, middle, 0
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)

    # ---- a decode step ----------------------------------------------------------------------

    def begin_step(self, columns: int = 1) -> torch.Tensor:
        """Make room for ``columns`` new tokens per row; the attention mask for the forward."""
        self._fit(self.start, self.end + columns, self.rows)
        self._pending = columns
        ones = torch.ones((self.rows, columns), dtype=torch.long, device=self.device)
        return torch.cat([self.mask, ones], dim=1)  # (rows, width + columns)

    def end_step(self, mask: torch.Tensor) -> None:
        """Commit the columns the forward wrote (``mask`` is the one ``begin_step`` gave)."""
        self.end += self._pending
        self._pending = 0
        self.mask = mask

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's new keys/values (rows, H, columns, D) in; its live keys/values out."""
        columns = keys.shape[2]
        if keys.shape[0] != self.rows or columns != self._pending:
            raise RuntimeError(
                f"KV slab holds {self.rows} rows expecting {self._pending} new columns, "
                f"got {tuple(keys.shape)}"
            )
        stop = self.end + columns
        k, v = self._keys[layer], self._values[layer]
        k[: self.rows, :, self.end : stop] = keys
        v[: self.rows, :, self.end : stop] = values
        return k[: self.rows, :, self.start : stop], v[: self.rows, :, self.start : stop]

    # ---- batch surgery between steps ----------------------------------------------------------

    def append(self, kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        """Join prefilled rows: ``kv`` per layer (R, H, T, D), ``mask`` (R, T), left-padded."""
        live = mask.any(dim=0).nonzero()
        if not live.numel():
            return
        first = int(live[0])  # columns that are padding for every new row are not copied
        kv = [(k[:, :, first:], v[:, :, first:]) for k, v in kv]
        mask = mask[:, first:]
        new, columns = mask.shape
        if self._shape is None:
            keys = kv[0][0]
            self._shape = (keys.shape[1], keys.shape[3], keys.dtype)
        if self.rows == 0:
            self.clear()
        start = min(self.start, self.end - columns)
        self._fit(start, self.end, self.rows + new)
        start = min(self.start, self.end - columns)  # _fit may have moved the region
        lo, hi = self.rows, self.rows + new
        for (k_new, v_new), k, v in zip(kv, self._keys, self._values, strict=True):
            if start < self.start:  # the running rows grow padding on the left
                k[:lo, :, start : self.start] = 0
                v[:lo, :, start : self.start] = 0
            k[lo:hi, :, start : self.end - columns] = 0
            v[lo:hi, :, start : self.end - columns] = 0
            k[lo:hi, :, self.end - columns : self.end] = k_new
            v[lo:hi, :, self.end - columns : self.end] = v_new
        old = torch.nn.functional.pad(self.mask, (self.start - start, 0))
        joined = torch.nn.functional.pad(mask.to(self.device), (self.end - columns - start, 0))
        self.mask = torch.cat([old, joined], dim=0)
        self.start, self.rows = start, hi

    def drop(self, dead: list[int]) -> list[int]:
        """Remove rows ``dead``; returns, for each remaining slot, the old row now in it."""
        gone = set(dead)
        remaining = self.rows - len(gone)
        holes = [i for i in sorted(gone) if i < remaining]
        movers = [i for i in range(remaining, self.rows) if i not in gone]
        order = list(range(remaining))
        if holes:
            to = torch.tensor(holes, device=self.device)
            src = torch.tensor(movers, device=self.device)
            for k, v in zip(self._keys, self._values, strict=True):
                k[to, :, self.start : self.end] = k[src, :, self.start : self.end]
                v[to, :, self.start : self.end] = v[src, :, self.start : self.end]
            for hole, mover in zip(holes, movers, strict=True):
                order[hole] = mover
        self.rows = remaining
        self.mask = self.mask[torch.tensor(order, dtype=torch.long, device=self.device)]
        live = self.mask.any(dim=0).nonzero()
        trim = int(live[0]) if live.numel() else self.mask.shape[1]
        self.start += trim
        self.mask = self.mask[:, trim:]
        if self.rows == 0:
            self.clear()
        return order

    # ---- capacity ----------------------------------------------------------------------------

    def _fit(self, start: int, end: int, rows: int) -> None:
        """Make columns ``[start, end)`` and ``rows`` rows addressable, moving the live region
        into larger buffers when they are not (amortised: capacities at least double)."""
        have_rows, have_columns = self._capacity()
        if start >= 0 and end <= have_columns and rows <= have_rows:
            return
        assert self._shape is not None, "the first append sets the buffers' shape"
        heads, dim, dtype = self._shape
        row_cap = max(MIN_ROWS, have_rows, _next_power_of_two(rows))
        span = end - start
        column_cap = max(MIN_COLUMNS, have_columns, 2 * span)
        # Room on both sides: joins of longer prompts grow to the left, steps to the right.
        shift = (column_cap - span) // 2 - start
        live = slice(self.start, self.end)
        moved = slice(self.start + shift, self.end + shift)
        for layer in range(self.layers):
            for buffers in (self._keys, self._values):
                new = torch.empty(
                    (row_cap, heads, column_cap, dim), dtype=dtype, device=self.device
                )
                if layer < len(buffers):
                    new[: self.rows, :, moved] = buffers[layer][: self.rows, :, live]
                    buffers[layer] = new
                else:
                    buffers.append(new)
        self.start += shift
        self.end += shift

    def _capacity(self) -> tuple[int, int]:
        """(rows, columns) the buffers hold; (0, 0) before the first append."""
        if not self._keys:
            return 0, 0
        return self._keys[0].shape[0], self._keys[0].shape[2]


def layers_of(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers ``DynamicCache``, each (B, H, T, D)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class _SlabLayer(CacheLayerMixin):
    """transformers' per-layer cache contract, backed by one layer of a ``KVSlab``."""

    is_sliding = False

    def __init__(self, slab: KVSlab, index: int) -> None:
        super().__init__()
        self._slab = slab
        self._index = index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._slab.write(self._index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._slab.width + query_length, 0

    def get_seq_length(self) -> int:
        return self._slab.width

    def get_max_length(self) -> int:
        return -1
