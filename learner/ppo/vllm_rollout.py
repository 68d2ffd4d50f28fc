"""PPO rollouts from a vLLM instance colocated with training on the same GPU.

As TRL's ``use_vllm`` colocate mode (https://huggingface.co/docs/trl/main/en/vllm_integration)
and OpenRLHF (https://github.com/OpenRLHF/OpenRLHF): one ``vllm.LLM`` on the base model is made
per PPO stage, with a small ``gpu_memory_utilization`` so that training keeps the rest of the
GPU. TRL merges the LoRA into the weights and loads them into vLLM; here the policy stays a LoRA
(the served artefact), so each batch hands vLLM the policy's current adapter instead: saved
with PEFT's ``save_pretrained`` and named by a fresh ``LoRARequest`` id, since vLLM caches an
adapter by its id and would otherwise keep sampling from a stale policy
(https://docs.vllm.ai/en/latest/features/lora.html). The previous id is removed afterwards.

Only the sampling moves to vLLM: log-probabilities of the sampled tokens, the reference's and
the rewards are computed by the torch models, so the PPO ratio still compares the policy with
itself (vLLM's bfloat16 sampling distribution differs slightly from the float32 policy's;
TRL accepts the same mismatch).
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.decoding.sampling import row_seed
from learner.ppo.rollout_engines import RolloutRequest, cut_at_stop, draw_seed

logger = logging.getLogger(__name__)

# vLLM accepts these ``max_lora_rank`` values only (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds a rank-``rank`` adapter."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest ({VLLM_LORA_RANKS[-1]})")


def llm_args(base_model_dir: Path, config: Any) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for a PPO stage (a plain dict: testable without vLLM)."""
    return {
        "model": str(base_model_dir),
        "enable_lora": True,
        "max_lora_rank": vllm_lora_rank(config.lora_r),
        "max_loras": 1,  # every row of a batch samples from the one current policy
        "gpu_memory_utilization": config.vllm_gpu_memory_utilization,
        "dtype": "bfloat16",
        "max_model_len": config.max_prompt_length + config.max_new_tokens,
        "seed": config.seed,
    }


def _vllm_llm(**kwargs: Any) -> Any:
    # The engine core in this process (vLLM otherwise spawns one): it shares the GPU context
    # with training, as TRL's colocate mode runs it, and needs no __main__ guard in the learner.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    return LLM(**kwargs)


def _sampling_params(**kwargs: Any) -> Any:
    from vllm import SamplingParams

    return SamplingParams(**kwargs)


def _lora_request(name: str, lora_id: int, path: str) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, lora_id, path)


@dataclass
class VLLMApi:
    """The vLLM constructors the engine calls (tests pass recording fakes)."""

    llm: Callable[..., Any] = _vllm_llm
    sampling_params: Callable[..., Any] = _sampling_params
    lora_request: Callable[[str, int, str], Any] = _lora_request


@dataclass
class VLLMRolloutEngine:
    llm: Any
    max_lora_rank: int
    api: VLLMApi = field(default_factory=VLLMApi)
    name: str = "vllm"
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _loaded: int | None = None  # the LoRA id vLLM holds, removed when the next one comes

    @classmethod
    def for_stage(
        cls, base_model_dir: Path, config: Any, api: VLLMApi | None = None
    ) -> VLLMRolloutEngine:
        api = api or VLLMApi()
        args = llm_args(base_model_dir, config)
        logger.info("vLLM rollouts: %s", args)
        return cls(api.llm(**args), args["max_lora_rank"], api)

    def responses(
        self, peft_model: Any, prompt_rows: list[list[int]], request: RolloutRequest, pad_id: int
    ) -> list[list[int]]:
        seed = draw_seed()
        params = [
            self.api.sampling_params(
                n=1,
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=0,  # no top-k (vLLM >= 0.8: 0 disables it; -1 is the older spelling)
                max_tokens=request.max_new_tokens,
                stop_token_ids=list(request.stop_ids),
                seed=row_seed(seed, i),
            )
            for i in range(len(prompt_rows))
        ]
        prompts = [{"prompt_token_ids": row} for row in prompt_rows]
        with tempfile.TemporaryDirectory(prefix="rlhf-rollout-lora-") as tmp:
            lora = self._hand_over(peft_model, Path(tmp))
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
        if len(outputs) != len(prompt_rows):
            raise RuntimeError(f"vLLM answered {len(outputs)} of {len(prompt_rows)} prompts")
        return [answer_tokens(out, request.stop_ids) for out in outputs]

    def _hand_over(self, peft_model: Any, tmp: Path) -> Any:
        """The policy's current LoRA as a new ``LoRARequest`` (None with the adapter disabled:
        the reference samples from the base)."""
        if not adapter_enabled(peft_model):
            return None
        path = save_active_adapter(peft_model, tmp)
        rank = int(peft_model.peft_config[peft_model.active_adapter].r)
        if rank > self.max_lora_rank:
            raise ValueError(f"policy LoRA rank {rank} > vLLM max_lora_rank {self.max_lora_rank}")
        self._forget_loaded()
        lora_id = next(self._ids)
        self._loaded = lora_id
        return self.api.lora_request(f"policy-{lora_id}", lora_id, str(path))

    def _forget_loaded(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        if self._loaded is not None and engine is not None:
            engine.remove_lora(self._loaded)
        self._loaded = None

    def close(self) -> None:
        """Shut vLLM down and free its share of the GPU (the stage is over)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        self.llm = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def adapter_enabled(peft_model: Any) -> bool:
    """Whether the PEFT model's LoRA layers are on (off inside ``disable_adapter()``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer):
            return not module.disable_adapters
    return False


def save_active_adapter(peft_model: Any, root: Path) -> Path:
    """Save the active adapter alone; the directory holding its adapter_config.json.

    PEFT writes the adapter named ``default`` at ``root`` and any other under ``root/<name>``
    (the policy may share its base with other adapters, such as a reward model's)."""
    name = peft_model.active_adapter
    peft_model.save_pretrained(str(root), selected_adapters=[name])
    return root if name == "default" else root / name


def answer_tokens(output: Any, stop_ids: Sequence[int]) -> list[int]:
    """One vLLM ``RequestOutput``'s tokens, ending with the stop id it stopped on (vLLM keeps a
    stop token id in ``token_ids``; ``stop_reason`` names it should a version drop it)."""
    completion = output.outputs[0]
    if completion.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended an answer with {completion.finish_reason!r}")
    tokens = [int(t) for t in completion.token_ids]
    stopped_on = getattr(completion, "stop_reason", None)
    ends_on_stop = bool(tokens) and tokens[-1] in set(stop_ids)
    if completion.finish_reason == "stop" and isinstance(stopped_on, int) and not ends_on_stop:
        tokens.append(stopped_on)
    return cut_at_stop(tokens, stop_ids)
