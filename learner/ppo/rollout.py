"""Rollouts: sample responses from the policy, then score them with the frozen models.

The tokens come from a rollout engine (``learner.ppo.rollout_engines``: the batch decoder of
``common.decoding`` by default, Hugging Face ``generate``, or colocated vLLM on a GPU); every
engine's answers become the same ``Rollout``.

A response ends at the first of the model's end-of-turn ids (``common.end_of_turn``: the
generation config's, the tokenizer's EOS and the chat template's), the ids serving stops on:
a Llama 3 turn ends with ``<|eot_id|>``, not its tokenizer's ``eos_token``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from common.decoding.steps import pad_left
from common.end_of_turn import end_of_turn_ids
from learner.modeling import encode_prompt
from learner.ppo.rollout_engines import RolloutEngine, RolloutRequest, make_engine
from schemas.events import ChatMessage


@dataclass
class Rollout:
    """One batch of sampled responses. B rollouts, P prompt tokens (left-padded), R new tokens."""

    input_ids: torch.Tensor  # (B, P + R) prompt ++ response token ids
    attention_mask: torch.Tensor  # (B, P + R) 1 on real prompt and response tokens
    context_length: int  # P
    response_mask: torch.Tensor  # (B, R) 1 up to and including the first end-of-turn id
    has_eos: torch.Tensor  # (B,) bool: the response ended by itself (an end-of-turn id)
    texts: list[str]  # B decoded responses (special tokens dropped)


class SamplingConfig(Protocol):
    """A stage config's sampling settings (PPO's, evaluation's)."""

    max_prompt_length: int
    max_new_tokens: int
    temperature: float
    top_p: float
    rollout_engine: str


def response_mask_from(responses: torch.Tensor, eos_token_id: int | Sequence[int]) -> torch.Tensor:
    """1 on tokens up to and including the first of the EOS ids, 0 after. (B, R) -> (B, R) long.

    ``eos_token_id`` is one id or a list, as ``generate`` takes it.
    """
    is_eos = _is_any(responses, eos_token_id).long()  # (B, R)
    eos_before = is_eos.cumsum(-1) - is_eos  # (B, R) EOS tokens strictly before t
    return (eos_before == 0).long()


def _is_any(responses: torch.Tensor, ids: int | Sequence[int]) -> torch.Tensor:
    wanted = torch.tensor([ids] if isinstance(ids, int) else list(ids), device=responses.device)
    return torch.isin(responses, wanted)  # (B, R) bool


@torch.no_grad()
def sample(
    peft_model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[ChatMessage]],
    max_prompt_length: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool = False,
    engine: str | RolloutEngine = "auto",
) -> Rollout:
    """Generate one response per prompt with the (adapter-enabled) model, each stopped at the
    first of the model's end-of-turn ids. ``engine``: a name (``learner.ppo.rollout_engines``;
    ``auto`` = the batch decoder) or an engine a stage opened (vLLM)."""
    rows = [encode_prompt(tokenizer, p)[-max_prompt_length:] for p in prompts]
    device = next(peft_model.parameters()).device
    if isinstance(engine, str):
        engine = make_engine(engine)
    eos_ids = end_of_turn_ids(tokenizer, getattr(peft_model, "generation_config", None))
    request = RolloutRequest(
        max_new_tokens=max_new_tokens,
        temperature=0.0 if greedy else temperature,
        top_p=top_p,
        stop_ids=tuple(eos_ids),
    )
    was_training = peft_model.training
    peft_model.eval()
    try:
        responses = engine.responses(peft_model, rows, request, tokenizer.pad_token_id)
    finally:
        peft_model.train(was_training)
    return rollout_from_responses(rows, responses, eos_ids, tokenizer, device)


def rollout_from_responses(
    prompt_rows: list[list[int]],
    responses: list[list[int]],
    eos_ids: Sequence[int],
    tokenizer: Any,
    device: torch.device,
) -> Rollout:
    """The ``Rollout`` of prompt and response token rows, as ``generate`` lays them out: prompts
    left-padded, responses right-padded with the pad id to the longest one."""
    prompt_ids, prompt_mask = pad_left(prompt_rows, tokenizer.pad_token_id)
    width = max((len(r) for r in responses), default=0)
    padded = torch.full((len(responses), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(responses):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    padded = padded.to(device)  # (B, R)
    mask = response_mask_from(padded, eos_ids)  # (B, R)
    # Padding is no answer: a row shorter than the longest never reached those positions
    # (``generate`` fills them with the pad id, which may be an end-of-turn id itself).
    mask = mask * _within(responses, width, device)
    has_eos = (_is_any(padded, eos_ids) & mask.bool()).any(-1)
    padded = torch.where(mask.bool(), padded, tokenizer.pad_token_id)
    texts = [
        tokenizer.decode(row[m.bool()], skip_special_tokens=True)
        for row, m in zip(padded.cpu(), mask.cpu(), strict=True)
    ]
    context = prompt_ids.shape[1]
    return Rollout(
        input_ids=torch.cat([prompt_ids.to(device), padded], dim=1),
        attention_mask=torch.cat([prompt_mask.to(device), mask], dim=1),
        context_length=context,
        response_mask=mask,
        has_eos=has_eos,
        texts=texts,
    )


def _within(responses: list[list[int]], width: int, device: torch.device) -> torch.Tensor:
    """(B, R) 1 on the positions each response filled."""
    lengths = torch.tensor([len(r) for r in responses], device=device)  # (B,)
    return (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()


def sample_as(
    config: SamplingConfig,
    peft_model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[ChatMessage]],
    engine: RolloutEngine | None = None,
) -> Rollout:
    """``sample`` with the sampling settings of a stage's config (and its ``rollout_engine``
    unless an opened ``engine`` is given)."""
    return sample(
        peft_model,
        tokenizer,
        prompts,
        config.max_prompt_length,
        config.max_new_tokens,
        config.temperature,
        config.top_p,
        engine=engine if engine is not None else config.rollout_engine,
    )
