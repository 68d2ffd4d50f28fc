"""``folded_while`` (common.decoding.folded_lora): the active adapter folded into copies of the
adapted weights computes what PEFT's LoRA layers compute, and the model comes back exactly as it
was (the same base weight tensors, every layer's on/off flag), also after an error; nothing is
folded where no single adapter is active."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from common.decoding.folded_lora import folded_while, lora_layers
from tests.support.engines import write_lora_adapter

IDS = torch.tensor([[5, 17, 42, 9, 101, 7, 33]])


@pytest.fixture(scope="module")
def policy(lively_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = write_lora_adapter(lively_model_dir, tmp_path_factory.mktemp("lora"), seed=1)
    base = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _state(model: Any) -> list[tuple[int, bool]]:
    """Each LoRA layer's base weight (its identity) and its adapters-off flag."""
    return [(id(m.get_base_layer().weight), m.disable_adapters) for m in lora_layers(model)]


def test_folded_logits_are_the_lora_layers_and_the_model_comes_back(policy: Any) -> None:
    before, state = _logits(policy), _state(policy)
    with policy.disable_adapter():
        bare = _logits(policy)
    assert not torch.allclose(before, bare, atol=1e-3)  # the adapter changes the answer
    with folded_while(policy) as folded:
        assert folded
        assert all(m.disable_adapters for m in lora_layers(policy))  # the copies do the work
        assert torch.allclose(_logits(policy), before, atol=1e-4)
    assert _state(policy) == state
    assert torch.equal(_logits(policy), before)


def test_an_error_in_the_block_puts_the_model_back(policy: Any) -> None:
    before, state = _logits(policy), _state(policy)
    with pytest.raises(RuntimeError), folded_while(policy):
        raise RuntimeError("decoding failed")
    assert _state(policy) == state
    assert torch.equal(_logits(policy), before)


def test_nothing_is_folded_without_one_active_adapter(policy: Any, lively_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    with policy.disable_adapter():
        state = _state(policy)
        with folded_while(policy) as folded:
            assert not folded
            assert _state(policy) == state
    plain = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
    with folded_while(plain) as folded:
        assert not folded
