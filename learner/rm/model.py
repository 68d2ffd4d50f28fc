"""The reward model: base causal LM body + LoRA + a linear head on the last non-pad token.

r(x, y) = w . h_T(x ++ y ++ EOS) + b, where h_T is the final hidden state of the last real
token (Ziegler et al. 2019; Ouyang et al. 2022). The adapter directory holds the PEFT adapter
files plus ``score_head.safetensors``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from learner.modeling import (
    ScalarHead,
    TrainOptions,
    encode_pair,
    hidden_states,
    last_token_index,
    load_base_model,
    load_tokenizer,
    pad_right,
    with_lora,
)
from schemas.events import ChatMessage

logger = logging.getLogger(__name__)

HEAD_FILE = "score_head.safetensors"


class RewardModel(nn.Module):
    """LoRA-adapted LM body + scalar head. ``forward`` returns one reward per row."""

    def __init__(self, backbone: Any, head: ScalarHead, tokenizer: Any, max_length: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def create(
        cls, base_model_dir: Path, options: TrainOptions, init_adapter: Path | None = None
    ) -> RewardModel:
        """A trainable reward model: fresh LoRA + head, or continued from ``init_adapter``."""
        base = load_base_model(base_model_dir)
        backbone = with_lora(base, options, init_adapter)
        head = ScalarHead(base.config.hidden_size, seed=options.seed)
        if init_adapter is not None and (init_adapter / HEAD_FILE).is_file():
            head.load_state_dict(load_file(str(init_adapter / HEAD_FILE)))
        return cls(backbone, head, load_tokenizer(base_model_dir), options.max_length)

    @classmethod
    def load(cls, base_model_dir: Path, adapter_dir: Path, max_length: int = 1024) -> RewardModel:
        """A frozen reward model for scoring (PPO, evaluation)."""
        from peft import PeftModel

        base = load_base_model(base_model_dir)
        backbone = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
        head = ScalarHead(base.config.hidden_size)
        head.load_state_dict(load_file(str(adapter_dir / HEAD_FILE)))
        model = cls(backbone, head, load_tokenizer(base_model_dir), max_length)
        model.requires_grad_(False)
        return model.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states(self.backbone, input_ids, attention_mask)  # (B, T, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, last_token_index(attention_mask)]  # (B, H)
        return self.head(last)  # (B,)

    def encode(
        self, prompts: Sequence[Sequence[ChatMessage]], responses: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [
            encode_pair(self.tokenizer, p, r, self.max_length)[0]
            for p, r in zip(prompts, responses, strict=True)
        ]
        return pad_right(rows, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[Sequence[ChatMessage]],
        responses: Sequence[str],
        batch_size: int = 16,
    ) -> torch.Tensor:
        """Rewards of each (prompt, response). Returns (N,) float32 on CPU."""
        out: list[torch.Tensor] = []
        device = next(self.parameters()).device
        for start in range(0, len(responses), batch_size):
            ids, mask = self.encode(
                prompts[start : start + batch_size], responses[start : start + batch_size]
            )
            out.append(self(ids.to(device), mask.to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def save(self, adapter_dir: Path) -> None:
        adapter_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(adapter_dir))
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()},
            str(adapter_dir / HEAD_FILE),
        )
