"""Greedy decoding alone with a draft (serving.engines.smoke_decode): whatever the draft, the
answer is plain greedy decoding's; a right draft saves the sequential forwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from serving.engines.peft_adapters import AdapterSet
from serving.engines.protocol import BASE, EngineFailure
from serving.engines.smoke_decode import smoke_decode

pytestmark = pytest.mark.unit

PROMPT = [5, 17, 42, 9, 3, 77, 12]
MAX_NEW = 12


@pytest.fixture(scope="module")
def adapters(lively_model_dir: Path, adapter_dirs: dict[str, Path]) -> AdapterSet:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32).eval()
    adapters = AdapterSet(model, fold=True)
    with torch.inference_mode():
        for version in ("a@v1", "nan@v1"):
            adapters.load(version, adapter_dirs[version])
    return adapters


class CountingForwards:
    """Counts the model's forward calls while active."""

    def __init__(self, adapters: AdapterSet) -> None:
        self.adapters, self.calls = adapters, 0

    def __enter__(self) -> CountingForwards:
        self.handle = self.adapters.model.register_forward_pre_hook(self._count)
        return self

    def _count(self, *_: Any) -> None:
        self.calls += 1

    def __exit__(self, *_: object) -> None:
        self.handle.remove()


def decode(
    adapters: AdapterSet, adapter: str, draft: list[int], max_new: int = MAX_NEW, eos: int = -1
) -> list[int]:
    with torch.inference_mode():
        return smoke_decode(
            adapters,
            PROMPT,
            adapter,
            max_new,
            eos_ids={eos},
            max_positions=1 << 20,
            device=torch.device("cpu"),
            draft=draft,
        )


@pytest.mark.parametrize("adapter", [BASE, "a@v1"])
def test_any_draft_gives_the_plain_greedy_answer(adapters: AdapterSet, adapter: str) -> None:
    plain = decode(adapters, adapter, [])
    assert len(plain) == MAX_NEW and len(set(plain)) > 1  # a lively answer, not one token
    wrong = [(t + 1) % 100 for t in plain]
    half = plain[:5] + wrong[5:]
    for draft in (plain, wrong, half, plain + plain, plain[:3]):
        assert decode(adapters, adapter, draft) == plain, draft


def test_a_right_draft_takes_one_forward_and_a_wrong_one_a_forward_per_token(
    adapters: AdapterSet,
) -> None:
    base = decode(adapters, BASE, [])
    adapted = decode(adapters, "a@v1", [])
    agree = next(i for i, (b, a) in enumerate(zip(base, adapted, strict=True)) if b != a)
    for draft, forwards in (
        (adapted, 1),
        ([], MAX_NEW),
        ([(t + 1) % 100 for t in adapted], MAX_NEW),
        # The base's answer as the draft (what a smoke check passes): its agreeing prefix and
        # the adapter's own pick come from the first forward.
        (base, 1 + MAX_NEW - (agree + 1)),
    ):
        with CountingForwards(adapters) as counted:
            assert decode(adapters, "a@v1", draft) == adapted
        assert counted.calls == forwards, (draft, forwards)


def test_the_answer_stops_at_eos_and_at_max_new(adapters: AdapterSet) -> None:
    plain = decode(adapters, BASE, [])
    eos = plain[4]
    stopped = plain[: plain.index(eos)]
    for draft in ([], plain):
        assert decode(adapters, BASE, draft, eos=eos) == stopped
        assert decode(adapters, BASE, draft, max_new=3) == plain[:3]


def test_non_finite_logits_fail_the_decode(adapters: AdapterSet) -> None:
    plain = decode(adapters, BASE, [])
    for draft in ([], plain):
        with pytest.raises(EngineFailure, match="non-finite"):
            decode(adapters, "nan@v1", draft)
