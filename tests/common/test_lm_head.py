"""common.lm_head: with frozen weights (as under PEFT) the LM head of a ``logits_to_keep=1``
forward must run as one matrix multiply, not a batched one over copies of its weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from common.lm_head import compute_float32_lm_head_in_blocks, keep_lm_head_input_contiguous

pytestmark = pytest.mark.unit

ROWS, TOKENS = 4, 6


def _frozen_model(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.requires_grad_(False)  # what PEFT does to the base weights
    return model


def _last_logits_and_vocab_bmms(model: Any) -> tuple[torch.Tensor, int]:
    """Logits of the last position, and how many batched multiplies produced vocab-wide rows."""
    ids = torch.arange(ROWS * TOKENS).reshape(ROWS, TOKENS) % 50 + 3
    vocab = model.config.vocab_size
    cpu = [ProfilerActivity.CPU]
    with torch.inference_mode(), profile(activities=cpu, record_shapes=True) as p:
        logits = model(input_ids=ids, logits_to_keep=1).logits  # (ROWS, 1, V)
    bmms = [
        e
        for e in p.events()
        if e.name == "aten::bmm" and e.input_shapes and e.input_shapes[1][-1:] == [vocab]
    ]
    return logits, len(bmms)


def test_frozen_lm_head_broadcasts_its_weight_without_the_hook(tiny_model_dir: Path) -> None:
    # The defect the hook exists for: if torch stops doing this, the hook can go.
    _, bmms = _last_logits_and_vocab_bmms(_frozen_model(tiny_model_dir))
    assert bmms == 1


def test_hooked_lm_head_runs_one_matrix_multiply_with_the_same_logits(
    tiny_model_dir: Path,
) -> None:
    model = _frozen_model(tiny_model_dir)
    before, _ = _last_logits_and_vocab_bmms(model)
    keep_lm_head_input_contiguous(model)
    keep_lm_head_input_contiguous(model)  # idempotent: one hook
    after, bmms = _last_logits_and_vocab_bmms(model)
    assert bmms == 0
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 1
    torch.testing.assert_close(after, before)


def test_a_float32_head_in_vocabulary_blocks_gives_the_same_logits(tiny_model_dir: Path) -> None:
    model = _frozen_model(tiny_model_dir)
    ids = torch.arange(ROWS * TOKENS).reshape(ROWS, TOKENS) % 50 + 3
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        compute_float32_lm_head_in_blocks(model, block=7)  # blocks that do not divide the vocab
        compute_float32_lm_head_in_blocks(model, block=7)  # idempotent
        after = model(input_ids=ids).logits
        last = model(input_ids=ids, logits_to_keep=1).logits
    assert "forward" in vars(model.get_output_embeddings())
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    torch.testing.assert_close(last, before[:, -1:], rtol=0, atol=1e-6)


def test_a_bfloat16_head_keeps_one_multiply(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    head = model.get_output_embeddings()
    compute_float32_lm_head_in_blocks(model)
    assert "forward" not in vars(head)
