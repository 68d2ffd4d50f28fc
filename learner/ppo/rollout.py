"""Rollouts: sample responses from the policy, then score them with the frozen models.

A response ends at the first of the model's end-of-turn ids (``common.end_of_turn``: the
generation config's, the tokenizer's EOS and the chat template's), the ids serving stops on:
a Llama 3 turn ends with ``<|eot_id|>``, not its tokenizer's ``eos_token``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from common.end_of_turn import end_of_turn_ids
from learner.modeling import encode_prompt, pad_left
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
) -> Rollout:
    """Generate one response per prompt with the (adapter-enabled) model, each stopped at the
    first of the model's end-of-turn ids."""
    rows = [encode_prompt(tokenizer, p)[-max_prompt_length:] for p in prompts]
    prompt_ids, prompt_mask = pad_left(rows, tokenizer.pad_token_id)
    device = next(peft_model.parameters()).device
    eos_ids = end_of_turn_ids(tokenizer, getattr(peft_model, "generation_config", None))
    was_training = peft_model.training
    peft_model.eval()
    sampling: dict[str, Any] = (
        {"do_sample": False}
        if greedy
        else {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    )
    sequences = peft_model.generate(
        input_ids=prompt_ids.to(device),
        attention_mask=prompt_mask.to(device),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        **sampling,
    )  # (B, P + R)
    peft_model.train(was_training)
    context = prompt_ids.shape[1]
    responses = sequences[:, context:]  # (B, R)
    mask = response_mask_from(responses, eos_ids)  # (B, R)
    has_eos = (_is_any(responses, eos_ids) & mask.bool()).any(-1)
    responses = torch.where(mask.bool(), responses, tokenizer.pad_token_id)
    texts = [
        tokenizer.decode(row[m.bool()], skip_special_tokens=True)
        for row, m in zip(responses.cpu(), mask.cpu(), strict=True)
    ]
    return Rollout(
        input_ids=torch.cat([prompt_ids.to(device), responses], dim=1),
        attention_mask=torch.cat([prompt_mask.to(device), mask], dim=1),
        context_length=context,
        response_mask=mask,
        has_eos=has_eos,
        texts=texts,
    )


def sample_as(
    config: SamplingConfig,
    peft_model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[ChatMessage]],
) -> Rollout:
    """``sample`` with the sampling settings of a stage's config."""
    return sample(
        peft_model,
        tokenizer,
        prompts,
        config.max_prompt_length,
        config.max_new_tokens,
        config.temperature,
        config.top_p,
    )
