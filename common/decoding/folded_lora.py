"""One LoRA adapter folded into copies of the base weights, for decode steps that all use it.

Even on PEFT's active-adapter path, a rank-8 LoRA on every linear layer adds two small matrix
multiplies per layer and step, and small multiplies use CPU cores worst: 64 pair clients ran
17 % slower with the served adapter than on the base in float32, and 39 % slower in bfloat16
(``bench/results/serving.md``, ``serving_bf16.md``). After the learner's first cycle nearly every
step decodes the served version alone, so the engine folds that version's update into a copy of
each adapted weight, W' = W + s B A (what PEFT's ``merge`` computes; Hu et al. 2021, "LoRA:
Low-Rank Adaptation of Large Language Models", https://arxiv.org/abs/2106.09685, section 4.1: a
merged adapter adds no inference latency), and swaps the copies in while such steps run.

The base weights are never written: PEFT's in-place merge and unmerge would round twice per
switch, which in bfloat16 drifts the base by about 0.4 % of a weight each time. So going back to
the base, to another adapter or to a mixed batch is a swap of references. The price is one copy
of the adapted linear weights in memory (SmolLM2-135M: about 0.4 GB in float32), which
``SERVING_FOLD_ADAPTERS=false`` saves. The learner's rollouts fold the policy the same way for
the length of one rollout batch (``folded_while``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

logger = logging.getLogger(__name__)


def lora_layers(model: Any) -> list[Any]:
    """PEFT's LoRA-wrapped modules of ``model`` (empty before the first adapter is loaded)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def set_lora_enabled(layers: list[Any], enabled: bool) -> None:
    """Turn every LoRA layer's adapters on or off for the next forwards.

    PEFT's public ``enable_adapters`` also flips ``requires_grad`` on the adapter weights (a
    training concern, and slow to call per switch); serving only needs the flag its forward
    reads. ``tests/serving/engines/test_folded_lora.py`` fails if that flag stops working."""
    for layer in layers:
        layer._disable_adapters = not enabled


class FoldedAdapter:
    """``version``'s LoRA folded into a copy of every weight it adapts."""

    def __init__(self, version: str, swaps: list[tuple[Any, torch.nn.Parameter, Any]]) -> None:
        self.version = version
        # (base linear module, folded weight, original weight)
        self._swaps = swaps
        self.swapped_in = False

    @classmethod
    def build(cls, model: Any, version: str) -> FoldedAdapter | None:
        """Fold ``version`` into copies of the base weights; None when some layer of it cannot
        be folded exactly (not a linear layer, a LoRA variant such as DoRA, a LoRA bias), in
        which case serving keeps PEFT's active-adapter path."""
        from peft.tuners.lora import Linear as LoraLinear

        swaps: list[tuple[Any, torch.nn.Parameter, Any]] = []
        for layer in lora_layers(model):
            if version not in layer.lora_A:
                continue
            if (
                not isinstance(layer, LoraLinear)
                or version in layer.lora_variant
                or layer.lora_bias.get(version, False)
            ):
                logger.info("adapter %s: %s cannot be folded", version, type(layer).__name__)
                return None
            base = layer.get_base_layer()
            original = base.weight
            # The sum in float32 rounds once to the serving dtype.
            folded = original.float() + layer.get_delta_weight(version).float()
            swaps.append((base, torch.nn.Parameter(folded.to(original.dtype), False), original))
        return cls(version, swaps)

    def swap_in(self) -> None:
        if not self.swapped_in:
            for base, folded, _ in self._swaps:
                base._parameters["weight"] = folded
            self.swapped_in = True

    def swap_out(self) -> None:
        if self.swapped_in:
            for base, _, original in self._swaps:
                base._parameters["weight"] = original
            self.swapped_in = False


@contextmanager
def folded_while(model: Any) -> Iterator[bool]:
    """For the block, ``model``'s one active LoRA adapter runs folded into copies of the base
    weights (its LoRA layers off); True if it was folded. Nothing happens (False) when no
    adapter is active (outside PEFT, or under ``disable_adapter()``), when several are, or
    when one cannot be folded exactly, nor in a model FSDP shards (outside a unit's forward its
    weights are shards, gathered only while the unit runs). The base weights and every layer's
    on/off flag come back as they were, also on errors; the copies are freed when the block
    ends.

    For a fixed batch decoded to the end (the learner's rollouts), where every step uses the
    same adapter: the copies cost one adapted-weight matrix per layer for the block's length."""
    layers = lora_layers(model)
    # A PEFT model's ``active_adapters`` is a list (a plain transformers model's is a method).
    names = model.active_adapters if layers else []
    if len(names) != 1 or any(layer.disable_adapters for layer in layers) or _sharded(model):
        yield False
        return
    with torch.no_grad():
        folded = FoldedAdapter.build(model, names[0])
    if folded is None:
        yield False
        return
    flags = [layer._disable_adapters for layer in layers]
    folded.swap_in()
    set_lora_enabled(layers, False)
    try:
        yield True
    finally:
        for layer, flag in zip(layers, flags, strict=True):
            layer._disable_adapters = flag
        folded.swap_out()


def _sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())
