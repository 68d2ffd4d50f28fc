"""The batch decoder (common.decoding.batch) against Hugging Face ``generate`` on a PEFT model whose
LoRA changes the answers: the same greedy tokens for prompts of differing lengths, each row
stopped at its own stop id, seeded sampling that repeats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from common.decoding.batch import BatchSampling, decode_batch
from common.decoding.steps import pad_left
from tests.support.engines import write_lora_adapter

PAD = 0
# Token rows of four lengths; the second prompt twice (its answers share one prefill).
PROMPTS = [
    [5, 17, 42, 9, 101, 7, 33],
    [12, 250, 3],
    [77, 8, 64, 150, 23, 19, 48, 200, 11, 90, 4, 61],
    [12, 250, 3],
    [31],
]


@pytest.fixture(scope="module")
def adapter_dir(lively_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lora_adapter(lively_model_dir, tmp_path_factory.mktemp("lora"), seed=1)


def _peft(model_dir: Path, adapter: Path) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


@pytest.fixture(scope="module")
def policy(lively_model_dir: Path, adapter_dir: Path) -> Any:
    return _peft(lively_model_dir, adapter_dir)


def _generate(model: Any, max_new: int, stop: list[int]) -> list[list[int]]:
    """Hugging Face greedy answers, each cut after its first stop id."""
    ids, mask = pad_left(PROMPTS, PAD)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=PAD,
        )
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        ends = [i for i, t in enumerate(row) if t in stop]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows


def _greedy(max_new: int, stop: list[int]) -> BatchSampling:
    return BatchSampling(max_new_tokens=max_new, temperature=0.0, top_p=1.0, stop_ids=stop)


def test_greedy_answers_are_generates_with_the_adapter_on_and_off(policy: Any) -> None:
    never = [PAD]  # a stop id the model never emits here: every row runs its whole length
    decoded = decode_batch(policy, PROMPTS, _greedy(12, never), PAD)
    assert decoded == _generate(policy, 12, never)
    assert all(len(row) == 12 for row in decoded)
    assert decoded[1] == decoded[3]
    with policy.disable_adapter():
        base = decode_batch(policy, PROMPTS, _greedy(12, never), PAD)
        assert base == _generate(policy, 12, never)
    assert base != decoded  # the LoRA acts, unfolded, through the decoder


def test_each_row_stops_at_its_first_stop_id(policy: Any) -> None:
    free = decode_batch(policy, PROMPTS, _greedy(12, [PAD]), PAD)
    # A token some rows emit midway and others never: those rows end there, the others run on.
    stop = next(
        t for t in sorted({t for row in free for t in row[1:-1]}) if any(t not in r for r in free)
    )
    decoded = decode_batch(policy, PROMPTS, _greedy(12, [PAD, stop]), PAD)
    assert decoded == _generate(policy, 12, [PAD, stop])
    for row, whole in zip(decoded, free, strict=True):
        if stop in whole:
            assert row == whole[: whole.index(stop) + 1]
        else:
            assert row == whole
    assert len({len(row) for row in decoded}) > 1


def test_seeded_sampling_repeats_and_another_seed_differs(policy: Any) -> None:
    def sampled(seed: int) -> list[list[int]]:
        sampling = BatchSampling(
            max_new_tokens=10, temperature=1.0, top_p=0.9, stop_ids=[PAD], seed=seed
        )
        return decode_batch(policy, PROMPTS, sampling, PAD)

    first = sampled(7)
    assert sampled(7) == first
    assert sampled(8) != first
    assert first[1] != first[3]  # two answers to one prompt draw their own tokens


def test_decoding_leaves_the_model_as_it_was(policy: Any) -> None:
    weights = {name: p.detach().clone() for name, p in policy.named_parameters()}
    decode_batch(policy, PROMPTS, _greedy(4, [PAD]), PAD)
    assert policy.get_base_model().config._attn_implementation == "sdpa"  # training attention
    after = dict(policy.named_parameters())
    assert after.keys() == weights.keys()
    assert all(torch.equal(after[name], value) for name, value in weights.items())


def test_non_finite_logits_fail_the_batch(
    lively_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broken = write_lora_adapter(lively_model_dir, tmp_path_factory.mktemp("nan"), seed=3, nan=True)
    with pytest.raises(FloatingPointError, match="non-finite"):
        decode_batch(_peft(lively_model_dir, broken), PROMPTS, _greedy(4, [PAD]), PAD)


def test_no_new_tokens_and_empty_prompts(policy: Any) -> None:
    assert decode_batch(policy, PROMPTS, _greedy(0, [PAD]), PAD) == [[] for _ in PROMPTS]
    with pytest.raises(ValueError, match="at least one token"):
        decode_batch(policy, [[5], []], _greedy(3, [PAD]), PAD)
