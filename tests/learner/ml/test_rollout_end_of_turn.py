"""PPO and evaluation rollouts stop at the model's end-of-turn ids (``common.end_of_turn``),
the ids serving stops on: for a Llama 3 style model ``<|eot_id|>``, not its ``eos_token``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from learner.modeling import load_base_model, load_tokenizer
from learner.ppo.rollout import response_mask_from, sample
from schemas.events import ChatMessage
from tests.support.llama3_style import END_OF_TEXT, EOT, write_llama3_style_model_dir

PROMPT = (ChatMessage(role="user", content="What is two plus two?"),)


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama3_style_model_dir(tmp_path_factory.mktemp("llama3-style"))


class _FixedPolicy(nn.Module):
    """Answers with fixed ids and records what ``generate`` was asked to stop on."""

    def __init__(self, answer_ids: list[int]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # ``sample`` reads the device from it
        self.answer_ids = torch.tensor(answer_ids, dtype=torch.long)
        self.generate_kwargs: dict[str, Any] = {}

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.generate_kwargs = kwargs
        answers = self.answer_ids.repeat(input_ids.shape[0], 1)  # (B, R)
        return torch.cat([input_ids, answers], dim=1)  # (B, P + R)


def test_response_mask_ends_at_the_first_of_several_ids() -> None:
    responses = torch.tensor([[5, 7, 6, 2, 0], [5, 2, 7, 7, 7], [5, 5, 5, 5, 5]])
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(response_mask_from(responses, [2, 7]), expected)


def test_a_rollout_stops_at_the_turns_end(llama3_dir: Path) -> None:
    tokenizer = load_tokenizer(llama3_dir)
    eot, end_of_text = tokenizer.convert_tokens_to_ids([EOT, END_OF_TEXT])
    words = tokenizer("Four.", add_special_tokens=False)["input_ids"]
    policy = _FixedPolicy([*words, eot, *words, end_of_text])
    rollout = sample(
        policy,
        tokenizer,
        [PROMPT],
        64,
        len(words) * 2 + 2,
        1.0,
        1.0,
        greedy=True,
        engine="generate",
    )
    assert set(policy.generate_kwargs["eos_token_id"]) == {eot, end_of_text}
    # Cut at the first end of turn: what follows it is no part of the answer.
    assert rollout.response_mask[0].tolist() == [1] * (len(words) + 1)
    assert rollout.input_ids[0, rollout.context_length :].tolist() == [*words, eot]
    assert rollout.has_eos.tolist() == [True]
    assert rollout.texts == ["Four."]


@pytest.mark.parametrize("engine", ["decode_loop", "generate"])
def test_real_decoding_ends_each_row_at_its_first_end_of_turn(
    llama3_dir: Path, engine: str
) -> None:
    tokenizer = load_tokenizer(llama3_dir)
    model = load_base_model(llama3_dir)
    eos = set(tokenizer.convert_tokens_to_ids([EOT, END_OF_TEXT]))
    torch.manual_seed(0)
    rollout = sample(model, tokenizer, [PROMPT] * 4, 64, 12, 1.0, 1.0, engine=engine)
    responses = rollout.input_ids[:, rollout.context_length :]
    for row, mask, ended in zip(responses, rollout.response_mask, rollout.has_eos, strict=True):
        kept = row[mask.bool()].tolist()
        assert not eos & set(kept[:-1])  # nothing decoded past an end of turn
        assert bool(ended) == (kept[-1] in eos)
