"""Policy + value model sharing one LoRA-adapted body; reference = the adapter disabled.

Value head choice: a linear head on the policy's last hidden states (Ziegler et al. 2019 share
the body too) rather than a separate critic. On this CPU one forward then yields both the
token logits and the values, and memory holds one copy of the base weights: the reference
policy is the same module under ``disable_adapter()`` (which switches off every adapter, the
reward model's attached one included: ``learner.adapters``). The cost is that value-loss
gradients reach the policy LoRA; ``vf_coef`` keeps them small.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, cast

import torch
from torch import nn

from learner.modeling import ScalarHead, hidden_states, lm_head_of
from learner.ppo.losses import logprobs_of


class PolicyWithValue(nn.Module):
    def __init__(self, peft_model: Any, value_head: ScalarHead) -> None:
        super().__init__()
        self.policy = peft_model
        self.value_head = value_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, R, V) and values (B, R) for the R tokens after ``context_length``.

        Position i's hidden state predicts token i + 1, so the response slice is shifted by one.
        """
        hidden = hidden_states(self.policy, input_ids, attention_mask)  # (B, T, H)
        hidden = hidden[:, context_length - 1 : -1]  # (B, R, H)
        # Logits upcast to float32: temperature, log-softmax, entropy and KL then run in float32
        # under a bfloat16 base (the head's matmul itself stays in the base's dtype).
        return lm_head_of(self.policy)(hidden).float(), self.value_head(hidden)

    def reference(self) -> AbstractContextManager[Any]:
        """Context in which the body is the base model (the PPO reference policy)."""
        return cast(AbstractContextManager[Any], self.policy.disable_adapter())


@torch.no_grad()
def response_logprobs(
    model: PolicyWithValue,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    context_length: int,
    temperature: float,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens (B, R) and values (B, R), in row chunks."""
    responses = input_ids[:, context_length:]  # (B, R)
    logps, values = [], []
    for start in range(0, input_ids.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        logits, value = model(input_ids[rows], attention_mask[rows], context_length)
        logps.append(logprobs_of(logits / temperature, responses[rows]))
        values.append(value)
    return torch.cat(logps), torch.cat(values)
