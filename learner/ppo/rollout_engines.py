"""What decodes the rollouts: the batch decoder (CPU default), ``generate``, or colocated vLLM.

The batch decoder serving's engine uses (``common.decoding``: preallocated KV cache,
grouped-query attention without copying the cache, ``logits_to_keep=1``, each distinct prompt
prefilled once, finished rows dropped) ran a default PPO iteration's rollouts 1.2x as fast as
Hugging Face ``generate`` on 2 CPU cores (bench/results/rollout_engine.md). On a GPU with vLLM
installed, vLLM decodes (``learner.ppo.vllm_rollout``), as TRL's ``use_vllm`` and OpenRLHF do.
Every engine answers the same question, the new tokens of each prompt row (ending with its stop
id when it met one), so ``learner.ppo.rollout`` builds one ``Rollout`` from any of them.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from common.decoding.batch import BatchSampling, decode_batch
from common.decoding.folded_lora import folded_while
from learner.ppo.config import check_rollout_engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutRequest:
    """How to sample one batch: ``temperature`` 0 = greedy; ``stop_ids`` end an answer."""

    max_new_tokens: int
    temperature: float
    top_p: float
    stop_ids: tuple[int, ...]


class RolloutEngine(Protocol):
    name: str

    def responses(
        self, peft_model: Any, prompt_rows: list[list[int]], request: RolloutRequest, pad_id: int
    ) -> list[list[int]]:
        """The new tokens of each prompt row, ending with its stop id if it met one."""
        ...

    def close(self) -> None: ...


def resolve_engine_name(name: str, device: torch.device, processes: int = 1) -> str:
    """``auto``: vLLM on a CUDA device when it is importable and the stage runs as one process
    (the colocated engine serves one process), else the batch decoder."""
    check_rollout_engine(name)
    if name != "auto":
        return name
    vllm_ok = device.type == "cuda" and processes == 1
    if vllm_ok and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "decode_loop"


def draw_seed() -> int:
    """A seed from torch's global generator: reproducible under ``set_seed``, and the same for
    two batches sampled after the same ``set_seed`` (evaluation's policy and reference)."""
    return int(torch.randint(0, 2**62, (1,)).item())


class DecodeLoopEngine:
    """``common.decoding.decode_batch`` on the policy itself, its LoRA folded into copies of
    the adapted weights for the batch (``common.decoding.folded_lora.folded_while``: every
    step of a rollout uses the same adapter, and the unfolded path's two small multiplies per
    layer cost about 30 % of a bfloat16 decode step on 2 CPU cores). ``fold=False`` decodes
    through PEFT's LoRA layers instead and holds no copy."""

    def __init__(self, fold: bool = True) -> None:
        self.fold = fold

    name = "decode_loop"

    def responses(
        self, peft_model: Any, prompt_rows: list[list[int]], request: RolloutRequest, pad_id: int
    ) -> list[list[int]]:
        sampling = BatchSampling(
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_ids=request.stop_ids,
            seed=draw_seed(),
        )
        with folded_while(peft_model) if self.fold else nullcontext():
            return decode_batch(peft_model, prompt_rows, sampling, pad_id)

    def close(self) -> None:
        return None


class GenerateEngine:
    """Hugging Face ``generate``: the reference the batch decoder is tested against."""

    name = "generate"

    def responses(
        self, peft_model: Any, prompt_rows: list[list[int]], request: RolloutRequest, pad_id: int
    ) -> list[list[int]]:
        from common.decoding.steps import pad_left

        ids, mask = pad_left(prompt_rows, pad_id)
        device = next(peft_model.parameters()).device
        greedy = request.temperature <= 0.0
        sampling: dict[str, Any] = (
            {"do_sample": False}
            if greedy
            else {
                "do_sample": True,
                "temperature": request.temperature,
                "top_p": request.top_p,
                "top_k": 0,
            }
        )
        sequences = peft_model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=request.max_new_tokens,
            eos_token_id=list(request.stop_ids),
            pad_token_id=pad_id,
            use_cache=True,
            **sampling,
        )  # (B, P + R)
        return [cut_at_stop(row, request.stop_ids) for row in sequences[:, ids.shape[1] :].tolist()]

    def close(self) -> None:
        return None


def cut_at_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """``tokens`` up to and including the first stop id (all of them if none)."""
    stops = set(stop_ids)
    for i, token in enumerate(tokens):
        if token in stops:
            return list(tokens[: i + 1])
    return list(tokens)


def make_engine(name: str) -> RolloutEngine:
    """An engine that holds nothing between batches: ``generate``, or the batch decoder (also
    for ``auto``: vLLM is chosen only where a stage opens its engine, ``open_rollout_engine``,
    since it loads a second copy of the base for the whole stage)."""
    check_rollout_engine(name)
    if name == "generate":
        return GenerateEngine()
    if name in ("decode_loop", "auto"):
        return DecodeLoopEngine()
    raise ValueError(
        "rollout_engine='vllm' holds a vLLM instance for a whole stage: PPO opens it "
        "(open_rollout_engine); elsewhere use auto, decode_loop or generate"
    )


def open_rollout_engine(
    name: str, base_model_dir: Path, config: Any, device: torch.device, processes: int = 1
) -> RolloutEngine:
    """The engine a PPO stage samples with, made once for the stage (vLLM loads the base)."""
    resolved = resolve_engine_name(name, device, processes)
    logger.info("ppo rollouts: %s (rollout_engine=%s, device %s)", resolved, name, device)
    if resolved != "vllm":
        return make_engine(resolved)
    if processes != 1:
        raise ValueError(
            "rollout_engine='vllm' colocates one vLLM instance with one training process; "
            f"this stage runs {processes} (use decode_loop or generate)"
        )
    from learner.ppo.vllm_rollout import VLLMRolloutEngine

    return VLLMRolloutEngine.for_stage(base_model_dir, config)
