"""Two fixes for the LM head's matrix multiply on the CPU: keep its input foldable into one
multiply, and run a float32 head over blocks of the vocabulary.

A forward with ``logits_to_keep=1`` (the serving engine's prefill) hands the LM head
``hidden[:, -1:, :]``, a (B, 1, H) view whose batch stride is T x H. ``torch.matmul``
folds a 3-D input into one (B, H) x (H, V) multiply only when that view is contiguous in its
leading dimensions, or when the weight requires a gradient (it then folds even at the price of a
copy). A plain model's weights require gradients, so it folds; under PEFT the base weights are
frozen, so it does not, and broadcasts the (H, V) weight to every row for a batched multiply:
SmolLM2's 576 x 49152 head copied 63 times (3.5 GB in bfloat16) for one 63-row prefill. On this
2-core CPU that made a 63-row prefill with an adapter loaded take 6-16 s against 0.7-2 s on the
plain model (docs/measurements.md). Copying the (B, 1, H) input instead costs B x H values.
The learner's rollouts (``generate`` on a PEFT model) showed no such batched multiply in their
profile, so only the serving engine registers the hook; why ``generate`` escapes it was not
looked into.

A float32 head of SmolLM2's size (576 x 49152, 113 MB) ran far below the other linear layers
on this 2-core CPU: 88 ms for 128 rows and 35 ms for 2 (3.3 GB/s of weights read), where
96 blocks of 512 vocabulary rows took 66 ms and 19 ms with bit-identical logits. Each block's
weights stay in cache across the rows. bfloat16 heads ran slower in blocks (27 -> 35 ms at 128
rows), so they keep one multiply.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_HOOKED = "_rlhf_contiguous_input_hook"
_BLOCKED = "_rlhf_vocabulary_blocks"
VOCABULARY_BLOCK = 512


def _contiguous_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    hidden, *rest = args
    return (hidden.contiguous(), *rest)


def keep_lm_head_input_contiguous(model: Any) -> None:
    """Make ``model``'s output embedding copy a strided input first (idempotent). Call it on the
    base model before PEFT wraps it: PEFT leaves the LM head module in place."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, _HOOKED, False):
        return
    head.register_forward_pre_hook(_contiguous_input)
    setattr(head, _HOOKED, True)


def compute_float32_lm_head_in_blocks(model: Any, block: int = VOCABULARY_BLOCK) -> None:
    """Run ``model``'s output embedding, when it is a float32 CPU ``nn.Linear``, as one multiply
    per ``block`` vocabulary rows (idempotent; other heads are left alone)."""
    head = model.get_output_embeddings()
    if (
        not isinstance(head, torch.nn.Linear)
        or head.weight.dtype != torch.float32
        or head.weight.device.type != "cpu"
        or getattr(head, _BLOCKED, False)
    ):
        return

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        # The weight is read at call time: tied embeddings or a swapped weight stay current.
        weight, bias = head.weight, head.bias
        if hidden.dtype != weight.dtype or hidden.device != weight.device:
            return F.linear(hidden, weight, bias)
        flat = hidden.reshape(-1, hidden.shape[-1])
        blocks = weight.split(block)
        biases = bias.split(block) if bias is not None else (None,) * len(blocks)
        parts = [F.linear(flat, w, b) for w, b in zip(blocks, biases, strict=True)]
        return torch.cat(parts, dim=-1).view(*hidden.shape[:-1], weight.shape[0])

    head.forward = forward  # type: ignore[method-assign,assignment]
    setattr(head, _BLOCKED, True)
