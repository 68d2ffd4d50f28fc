"""Byte arithmetic of the memory plan (``bench.memory_plan``): model shapes, parameter counts
built on the meta device (and the closed forms they are checked against), activations.

Activations per decoder layer without recomputation follow Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models" (https://arxiv.org/abs/2205.05198),
section 4.1, equation 1: ``s*b*h*(34 + 5*a*s/h)`` bytes for 16-bit activations, i.e.
``B*T*(34*H + 5*heads*T)``, the second term being the attention scores, softmax and dropout
mask that eager attention keeps (memory-efficient attention keeps none of them: ``sdpa``). With
activation checkpointing only each layer's 16-bit input is kept, ``2*B*T*H`` per layer
(section 4.3), plus one layer's full set while it is recomputed. Float32 activations take twice
the bytes. The formula assumes GELU and a 4H MLP; a SwiGLU MLP of 5.8H (Qwen2.5) or 3.5H (Llama
3.1) keeps a few more or fewer values per token: it is an estimate, checked against a measured
peak with ``python -m bench.memory_plan --measure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learner.modeling import TrainOptions, with_lora

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FLOAT32 = 4
GIB = float(1 << 30)


@dataclass(frozen=True)
class ModelShape:
    """The sizes the formulas need, read from a Hugging Face config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool  # Qwen2 has biases on q, k and v
    o_bias: bool

    @classmethod
    def of(cls, config: Any) -> ModelShape:
        heads = config.num_attention_heads
        attention_bias = bool(getattr(config, "attention_bias", False))
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
            tied=bool(config.tie_word_embeddings),
            qkv_bias=config.model_type == "qwen2" or attention_bias,
            o_bias=attention_bias,
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder layer's linear layer, by module name."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }


def load_config(config_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(config_dir))


def meta_model(config: Any) -> Any:
    """The causal LM of ``config`` with no storage: every tensor on the meta device (tied
    embeddings stay tied, unlike under accelerate's ``init_empty_weights``)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def built_base_params(config: Any) -> int:
    """Parameters of the base model as transformers builds it (shared tensors once)."""
    return sum(p.numel() for p in meta_model(config).parameters())


def built_lora_params(config: Any, options: TrainOptions) -> int:
    """Parameters the learner's ``with_lora`` adds for ``options`` (built on meta)."""
    base = meta_model(config)
    before = sum(p.numel() for p in base.parameters())
    with torch.device("meta"):
        peft_model = with_lora(base, options, None)
    return sum(p.numel() for p in peft_model.parameters()) - before


def base_params(shape: ModelShape) -> int:
    """Closed form of ``built_base_params`` for Llama / Qwen2 decoders (RMSNorm, SwiGLU)."""
    per_layer = 2 * shape.hidden  # the two RMSNorm weights
    for name, (fan_in, fan_out) in shape.linears().items():
        bias = (name in ("q_proj", "k_proj", "v_proj") and shape.qkv_bias) or (
            name == "o_proj" and shape.o_bias
        )
        per_layer += fan_in * fan_out + (fan_out if bias else 0)
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    return shape.layers * per_layer + embeddings + shape.hidden  # + the final norm


def lora_layers(shape: ModelShape, options: TrainOptions) -> int:
    """Decoder layers carrying LoRA (``with_lora``: the last N, or all when N is 0 or more)."""
    n = options.lora_layers
    return n if 0 < n < shape.layers else shape.layers


def lora_params(shape: ModelShape, options: TrainOptions) -> int:
    """Closed form of ``built_lora_params`` for all-linear targets: r*(in + out) per linear."""
    if options.lora_target_modules != "all-linear":
        raise ValueError("the closed form covers 'all-linear' LoRA targets only")
    per_layer = sum(options.lora_r * (a + b) for a, b in shape.linears().values())
    return lora_layers(shape, options) * per_layer


def layer_activation_bytes(
    shape: ModelShape, rows: int, seq: int, dtype_bytes: int, attention: str = "eager"
) -> int:
    """Activations one decoder layer keeps for backward (Korthikanti et al. 2022, eq. 1)."""
    scores = 5 * shape.heads * seq if attention == "eager" else 0
    return rows * seq * (34 * shape.hidden + scores) * dtype_bytes // 2


def trained_activation_bytes(
    shape: ModelShape,
    layers: int,
    rows: int,
    seq: int,
    dtype_bytes: int,
    checkpointing: bool = False,
    attention: str = "eager",
) -> int:
    """Activations kept through ``layers`` decoder layers that gradients flow through (frozen
    layers below the lowest LoRA layer keep none: nothing below them needs a gradient)."""
    full = layer_activation_bytes(shape, rows, seq, dtype_bytes, attention)
    if not checkpointing:
        return layers * full
    return layers * rows * seq * shape.hidden * dtype_bytes + full


def logits_bytes(rows: int, tokens: int, vocab: int, dtype_bytes: int) -> int:
    """Logits in the model's dtype and their float32 log-softmax, kept for the loss."""
    return rows * tokens * vocab * (dtype_bytes + FLOAT32)


def kv_cache_bytes(shape: ModelShape, rows: int, seq: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for ``rows`` sequences of ``seq`` tokens (sampling)."""
    return 2 * shape.layers * rows * seq * shape.kv_heads * shape.head_dim * dtype_bytes


def adam_bytes(trainable: int, master_copy: bool) -> int:
    """Adam's two float32 moments per trainable parameter, and a float32 master copy when the
    trained weights are kept in 16 bits (the learner keeps LoRA weights in float32: none)."""
    return trainable * FLOAT32 * (3 if master_copy else 2)
