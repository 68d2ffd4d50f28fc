"""The reward model: base causal LM body + LoRA + a linear head on pooled final hidden states.

Two poolings (``RewardConfig.pooling``):

- ``last``: r(x, y) = w . h_T(x ++ y ++ EOS) + b, the final hidden state of the last real token
  (Ziegler et al. 2019; Ouyang et al. 2022; TRL's reward model).
- ``mean+sum``: r = w1 . mean_t h_t + w2 . (sum_t h_t) / SUM_SCALE + b over the answer's tokens
  (EOS included). A linear head on the mean is the average of a per-token reward, on the sum its
  total: what a user judging length, list items or friendly words counts is linear in them,
  while the last token must summarise the whole answer in one state. Pooled sequence
  representations for scoring: Reimers & Gurevych 2019, "Sentence-BERT"
  (https://arxiv.org/abs/1908.10084), section 3 (mean pooling beat the single-token state).
  Measured with frozen-body linear probes on all three built-in preferences and with full
  reward models on ``format`` only (``bench/rm_probe.py``, ``bench/results/rm_sweep.md``).

The adapter directory holds the PEFT adapter files plus ``score_head.safetensors``,
``reward_head.json`` (the pooling) and ``reward_norm.json``: the mean and standard deviation
of the trained model's rewards over its training answers, so that PPO and the evaluation work in
standard units whatever scale one training run happened to end on (reward normalisation:
Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, section 2: "we normalize the reward model
so that it has mean 0 and variance 1"; also Huang et al. 2024, https://arxiv.org/abs/2403.17031).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from learner.adapters import (
    FIRST_ADAPTER,
    adapter_active,
    attach_frozen_adapter,
)
from learner.modeling import (
    ScalarHead,
    TrainOptions,
    encode_pair,
    hidden_states,
    last_token_index,
    load_base_model,
    load_tokenizer,
    pad_right_pairs,
    with_lora,
)
from learner.precision import base_dtype_of
from learner.sharding import sub_state
from schemas.events import ChatMessage

logger = logging.getLogger(__name__)

HEAD_FILE = "score_head.safetensors"
POOLING_FILE = "reward_head.json"
NORM_FILE = "reward_norm.json"
POOLINGS = ("last", "mean+sum")
# Sum-pooled states are divided by this many tokens, so that a typical answer's sum has the
# scale of one state and the head's zero start and learning rate suit both parts.
SUM_SCALE = 64.0
THRESHOLD_KEY = "rating_threshold"  # in HEAD_FILE beside the head's weight and bias


@dataclass(frozen=True)
class RewardNorm:
    """Affine map raw reward -> standard units: (r - mean) / std."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, rewards: torch.Tensor) -> RewardNorm:
        """From raw rewards (N,); a degenerate spread keeps std 1 rather than dividing by 0."""
        std = rewards.float().std(unbiased=False).item() if rewards.numel() > 1 else 0.0
        mean = rewards.float().mean().item() if rewards.numel() else 0.0
        return cls(mean=mean, std=std if std > 1e-6 else 1.0)

    def apply(self, rewards: torch.Tensor) -> torch.Tensor:
        return (rewards - self.mean) / self.std

    def save(self, adapter_dir: Path) -> None:
        (adapter_dir / NORM_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, adapter_dir: Path) -> RewardNorm:
        """The saved statistics; an adapter from before they existed is used raw (identity)."""
        path = adapter_dir / NORM_FILE
        if not path.is_file():
            logger.warning("%s has no %s: rewards are used unnormalised", adapter_dir, NORM_FILE)
            return cls()
        return cls(**json.loads(path.read_text()))


class RatingThreshold(nn.Module):
    """The rating loss's threshold tau, read by calling the module.

    A module of its own so that, under FSDP, it is a unit of its own: the rating loss reads it
    outside the model's forward (a unit's parameters are whole only in its forward), and the
    unit holding the frozen embeddings gets no gradient memory (``learner.sharding``). Shape
    (1,), not a scalar: FSDP flattens parameters and refuses 0-d ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(1))

    def forward(self) -> torch.Tensor:
        # A new tensor, not a view: FSDP frees a unit's whole parameters after its forward.
        return self.value.sum()


class RewardModel(nn.Module):
    """LoRA-adapted LM body + scalar head. ``forward`` returns one reward per row.

    The body is a PEFT model and ``adapter_name`` the reward model's adapter in it: its only
    adapter when the reward model has its own base (``create``, ``load``), or one of several on
    a base it shares with the policy (``attach``), switched on for each forward.
    """

    def __init__(
        self,
        backbone: Any,
        head: ScalarHead,
        tokenizer: Any,
        max_length: int,
        norm: RewardNorm | None = None,
        pooling: str = "last",
        adapter_name: str = FIRST_ADAPTER,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"reward pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        self.backbone = backbone
        self.adapter_name = adapter_name
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.norm = norm or RewardNorm()
        # tau of the rating loss, P(thumbs up) = sigmoid(r - tau); unused when scoring.
        self.rating = RatingThreshold()

    @property
    def threshold(self) -> nn.Parameter:
        return self.rating.value

    @classmethod
    def create(
        cls,
        base_model_dir: Path,
        options: TrainOptions,
        init_adapter: Path | None = None,
        head_init: str = "zero",
        pooling: str = "last",
    ) -> RewardModel:
        """A trainable reward model: fresh LoRA + head, or continued from ``init_adapter``
        (whose head is kept only when it was trained with the same pooling)."""
        base = load_base_model(base_model_dir, base_dtype_of(options))
        backbone = with_lora(base, options, init_adapter)
        width = base.config.hidden_size * _parts(pooling)
        head = ScalarHead(width, seed=options.seed, init=head_init)
        tokenizer = load_tokenizer(base_model_dir)
        model = cls(backbone, head, tokenizer, options.max_length, None, pooling)
        if init_adapter is not None and (init_adapter / HEAD_FILE).is_file():
            if read_pooling(init_adapter) == pooling:
                model._load_head(init_adapter)
            else:
                logger.info("%s was trained with another pooling: new head", init_adapter)
        return model

    def _load_head(self, adapter_dir: Path) -> None:
        state = load_file(str(adapter_dir / HEAD_FILE))
        threshold = state.pop(THRESHOLD_KEY, None)
        self.head.load_state_dict(state)
        if threshold is not None:
            with torch.no_grad():
                self.threshold.copy_(threshold)

    @classmethod
    def load(
        cls,
        base_model_dir: Path,
        adapter_dir: Path,
        max_length: int = 1024,
        base_dtype: torch.dtype = torch.float32,
    ) -> RewardModel:
        """A frozen reward model for scoring on a base of its own in ``base_dtype`` (the adapter
        and head stay float32). Where a PEFT model of the same base is at hand (PPO,
        evaluation), ``attach`` saves loading a second copy."""
        from peft import PeftModel

        base = load_base_model(base_model_dir, base_dtype)
        backbone = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
        tokenizer = load_tokenizer(base_model_dir)
        model = cls._frozen(backbone, adapter_dir, tokenizer, max_length, FIRST_ADAPTER)
        model.requires_grad_(False)
        return model.eval()

    @classmethod
    def attach(
        cls,
        peft_model: Any,
        adapter_dir: Path,
        name: str,
        tokenizer: Any,
        max_length: int = 1024,
    ) -> RewardModel:
        """A frozen reward model as adapter ``name`` of ``peft_model`` (the policy's), sharing
        its base weights. Each forward runs under ``adapter_active``: the reward adapter on,
        no gradients, eval mode, and the policy's adapter, mode and trainability put back."""
        attach_frozen_adapter(peft_model, adapter_dir, name)
        return cls._frozen(peft_model, adapter_dir, tokenizer, max_length, name)

    @classmethod
    def _frozen(
        cls, backbone: Any, adapter_dir: Path, tokenizer: Any, max_length: int, name: str
    ) -> RewardModel:
        """The saved head, pooling and statistics of ``adapter_dir`` on ``backbone``, the head
        frozen. The backbone's flags are left alone: a shared one keeps the policy trainable
        (and its reward adapter was loaded frozen)."""
        pooling = read_pooling(adapter_dir)
        head = ScalarHead(backbone.get_base_model().config.hidden_size * _parts(pooling))
        norm = RewardNorm.load(adapter_dir)
        model = cls(backbone, head, tokenizer, max_length, norm, pooling, name)
        model._load_head(adapter_dir)
        model.head.requires_grad_(False)
        model.threshold.requires_grad_(False)
        return model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        answer_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards (B,). ``answer_mask`` (B, T) marks the answer's tokens for the pooled head;
        without it the whole sequence is pooled."""
        with adapter_active(self.backbone, self.adapter_name):
            # float32 before pooling: a bfloat16 sum over hundreds of tokens would keep 8 bits.
            hidden = hidden_states(self.backbone, input_ids, attention_mask).float()  # (B, T, H)
        if self.pooling == "last":
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            return self.head(hidden[rows, last_token_index(attention_mask)])  # (B,)
        pooled = pool_answer(hidden, attention_mask if answer_mask is None else answer_mask)
        return self.head(pooled)  # (B,)

    def encode(
        self, prompts: Sequence[Sequence[ChatMessage]], responses: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask and answer mask (B, T) of right-padded rows."""
        rows = [
            encode_pair(self.tokenizer, p, r, self.max_length)
            for p, r in zip(prompts, responses, strict=True)
        ]
        return pad_right_pairs(rows, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[Sequence[ChatMessage]],
        responses: Sequence[str],
        batch_size: int = 16,
        normalized: bool = False,
    ) -> torch.Tensor:
        """Rewards of each (prompt, response), raw or in standard units. (N,) float32 on CPU."""
        out: list[torch.Tensor] = []
        device = next(self.parameters()).device
        for start in range(0, len(responses), batch_size):
            ids, mask, answer = self.encode(
                prompts[start : start + batch_size], responses[start : start + batch_size]
            )
            out.append(self(ids.to(device), mask.to(device), answer.to(device)).float().cpu())
        rewards = torch.cat(out) if out else torch.zeros(0)
        return self.norm.apply(rewards) if normalized else rewards

    def save(self, adapter_dir: Path, gathered: dict[str, torch.Tensor] | None = None) -> None:
        """The adapter, head, threshold, pooling and norm; from ``gathered`` (this model's full
        state dict, ``learner.sharding.gathered_state``) when its own parameters are shards."""
        if self.adapter_name != FIRST_ADAPTER:
            # PEFT would write the shared model's policy adapter here and this one in a
            # subfolder: an attached reward model only scores.
            raise ValueError("a reward model attached to a shared base cannot be saved")
        adapter_dir.mkdir(parents=True, exist_ok=True)
        if gathered is None:
            self.backbone.save_pretrained(str(adapter_dir))
            head = self.head.state_dict()
            threshold = self.threshold.detach()
        else:
            self.backbone.save_pretrained(
                str(adapter_dir), state_dict=sub_state(gathered, "backbone.")
            )
            head = sub_state(gathered, "head.")
            threshold = gathered["rating.value"]
        state = {k: v.contiguous() for k, v in head.items()}
        save_file(
            state | {THRESHOLD_KEY: threshold.reshape(()).contiguous()},
            str(adapter_dir / HEAD_FILE),
        )
        (adapter_dir / POOLING_FILE).write_text(json.dumps({"pooling": self.pooling}))
        self.norm.save(adapter_dir)


def pool_answer(hidden: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Mean and scaled sum of the answer tokens' states: (B, T, H), (B, T) -> (B, 2H)."""
    weights = answer_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (hidden * weights).sum(dim=1)  # (B, H)
    count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return torch.cat([total / count, total / SUM_SCALE], dim=-1)


def read_pooling(adapter_dir: Path) -> str:
    """The pooling a saved reward model was trained with; adapters from before it was
    recorded used the last token."""
    path = adapter_dir / POOLING_FILE
    return str(json.loads(path.read_text())["pooling"]) if path.is_file() else "last"


def _parts(pooling: str) -> int:
    """How many hidden-size vectors the pooling hands the head."""
    return 2 if pooling == "mean+sum" else 1
