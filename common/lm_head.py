"""Keep the LM head's input foldable into one matrix multiply.

A forward with ``logits_to_keep=1`` (the serving engine's prefill) hands the LM head
``hidden[:, -1:, :]``, a (B, 1, H) view whose batch stride is T x H. ``torch.matmul``
folds a 3-D input into one (B, H) x (H, V) multiply only when that view is contiguous in its
leading dimensions, or when the weight requires a gradient (it then folds even at the price of a
copy). A plain model's weights require gradients, so it folds; under PEFT the base weights are
frozen, so it does not, and broadcasts the (H, V) weight to every row for a batched multiply:
SmolLM2's 576 x 49152 head copied 63 times (3.5 GB in bfloat16) for one 63-row prefill. On this
2-core CPU that made a 63-row prefill with an adapter loaded take 6-16 s against 0.7-2 s on the
plain model (docs/architecture.md). Copying the (B, 1, H) input instead costs B x H values.
The learner's rollouts (``generate`` on a PEFT model) showed no such batched multiply in their
profile, so only the serving engine registers the hook; why ``generate`` escapes it was not
looked into.
"""

from __future__ import annotations

from typing import Any

import torch

_HOOKED = "_rlhf_contiguous_input_hook"


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
