"""Folded adapters (common.decoding.folded_lora through AdapterSet): a step whose rows all use
one adapter runs on copies of the base weights with it folded in, and must compute what PEFT's
LoRA path computes; the base weights must come back untouched for base and mixed steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from serving.engines.peft_adapters import AdapterSet
from serving.engines.protocol import BASE
from tests.support.engines import write_lora_adapter

pytestmark = pytest.mark.unit

IDS = torch.tensor([[5, 17, 42, 9, 3], [8, 8, 101, 7, 64], [12, 1, 33, 90, 2]])  # (3, T)


def _model(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _logits(adapters: AdapterSet, versions: list[str], fold: bool = True) -> torch.Tensor:
    with torch.inference_mode():
        kwargs = adapters.forward_kwargs(versions, fold=fold)
        return adapters.model(input_ids=IDS, **kwargs).logits  # (3, T, V)


def _base_weights(model: Any) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "lora_" not in n}


@pytest.fixture()
def adapters(lively_model_dir: Path, adapter_dirs: dict[str, Path]) -> AdapterSet:
    adapters = AdapterSet(_model(lively_model_dir), fold=True)
    with torch.inference_mode():
        adapters.load("a@v1", adapter_dirs["a@v1"])
        adapters.load("b@v1", adapter_dirs["b@v1"])
    return adapters


def test_a_folded_adapter_computes_what_the_lora_path_computes(adapters: AdapterSet) -> None:
    lora = _logits(adapters, ["a@v1"] * 3, fold=False)
    folded = _logits(adapters, ["a@v1"] * 3)
    base = _logits(adapters, [BASE] * 3)
    assert adapters._folded is not None and adapters._folded.version == "a@v1"
    torch.testing.assert_close(folded, lora, atol=1e-4, rtol=1e-4)
    # The adapter matters, so the comparison above can fail (LoRA applied twice or not at all).
    assert (folded - base).abs().max() > 0.1


def test_base_and_mixed_steps_after_a_folded_one_use_the_original_weights(
    adapters: AdapterSet, lively_model_dir: Path
) -> None:
    before = {n: p.clone() for n, p in _base_weights(adapters.model).items()}
    plain = _model(lively_model_dir)
    with torch.inference_mode():
        expected_base = plain(input_ids=IDS).logits
    lora_b = _logits(adapters, ["b@v1"] * 3, fold=False)
    _logits(adapters, ["a@v1"] * 3)  # folds a@v1 and swaps it in
    torch.testing.assert_close(_logits(adapters, [BASE] * 3), expected_base)
    mixed = _logits(adapters, [BASE, "b@v1", BASE])
    torch.testing.assert_close(mixed[0], expected_base[0])
    torch.testing.assert_close(mixed[1], lora_b[1], atol=1e-4, rtol=1e-4)
    after = _base_weights(adapters.model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_switching_the_folded_version_and_unloading_it(adapters: AdapterSet) -> None:
    lora_b = _logits(adapters, ["b@v1"] * 3, fold=False)
    _logits(adapters, ["a@v1"] * 3)
    torch.testing.assert_close(_logits(adapters, ["b@v1"] * 3), lora_b, atol=1e-4, rtol=1e-4)
    assert adapters._folded is not None and adapters._folded.version == "b@v1"
    with torch.inference_mode():
        adapters.unload("b@v1")
    assert adapters._folded is None
    lora_a = _logits(adapters, ["a@v1"] * 3, fold=False)
    torch.testing.assert_close(_logits(adapters, ["a@v1"] * 3), lora_a, atol=1e-4, rtol=1e-4)


def test_a_smoke_decode_does_not_replace_the_served_folded_version(adapters: AdapterSet) -> None:
    _logits(adapters, ["a@v1"] * 3)
    _logits(adapters, ["b@v1"], fold=False)
    assert adapters._folded is not None and adapters._folded.version == "a@v1"


def test_an_adapter_that_cannot_be_folded_keeps_the_lora_path(
    lively_model_dir: Path, tmp_path: Path
) -> None:
    adapters = AdapterSet(_model(lively_model_dir), fold=True)
    with torch.inference_mode():
        adapters.load("d@v1", write_lora_adapter(lively_model_dir, tmp_path / "d", 4, dora=True))
    folded_try = _logits(adapters, ["d@v1"] * 3)
    assert adapters._folded is None
    torch.testing.assert_close(folded_try, _logits(adapters, ["d@v1"] * 3, fold=False))


def test_folding_off_keeps_the_lora_path(
    lively_model_dir: Path, adapter_dirs: dict[str, Path]
) -> None:
    adapters = AdapterSet(_model(lively_model_dir), fold=False)
    with torch.inference_mode():
        adapters.load("a@v1", adapter_dirs["a@v1"])
    _logits(adapters, ["a@v1"] * 3)
    assert adapters._folded is None
