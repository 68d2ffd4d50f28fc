"""Shared model plumbing for the trainers: base model + LoRA, scalar heads, chat tokenisation.

Every trainer (reward model, PPO, SFT) and the evaluation load the base causal LM once, wrap it
with a PEFT LoRA adapter (fresh, or continued from ``init_adapter``) and read the decoder's
hidden states directly, so one forward pass yields both token logits (through the LM head) and
scalar outputs (reward / value heads). References: Hu et al. 2021, "LoRA"
(https://arxiv.org/abs/2106.09685); PEFT (https://github.com/huggingface/peft).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.chat_encoding import encode_chat, encode_text
from common.end_of_turn import end_of_turn_id
from schemas.events import ChatMessage

logger = logging.getLogger(__name__)


def option(default: Any, help: str) -> Any:
    """A dataclass field with a help string (TRL-style config fields)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainOptions:
    """Options shared by every trainer: LoRA shape, optimiser, lengths, seed."""

    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = option(
        0.0, "Dropout on the LoRA input; 0 keeps rollouts and the PPO update on the same function."
    )
    # "all-linear" = every attention and MLP projection except the LM head: the modules vLLM's
    # LoRA path supports, so a policy adapter trained here is servable by both engines.
    lora_target_modules: str = option(
        "all-linear", "PEFT target_modules: 'all-linear' or a regex over module names."
    )
    # The last N layers only: the backward pass then stops N layers below the output, which on
    # a CPU makes a training step about twice as fast for a 30-layer model at N = 8.
    lora_layers: int = option(
        0, "LoRA only on the last N decoder layers; 0 (or N >= the model's layers) = every layer."
    )
    learning_rate: float = option(1e-4, "AdamW learning rate.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float = option(1.0, "Gradient clipping threshold (global L2 norm).")
    max_length: int = option(512, "Truncate prompt + response to this many tokens.")
    seed: int = option(0, "Seed for data order, splits, sampling and head initialisation.")
    device: str = option("auto", "'auto' (CUDA when present), 'cpu', or 'cuda'.")
    base_dtype: str = option(
        "auto",
        "Base weights' dtype: 'auto' (learner.precision), 'float32' or 'bfloat16'; LoRA, heads, "
        "optimiser states and losses stay float32.",
    )
    gradient_accumulation_steps: int = option(
        1,
        "Micro-batches per optimiser step: the effective batch is the stage's batch (PPO: "
        "mini_batch_size) times this, per process.",
    )
    gradient_checkpointing: bool = option(
        False,
        "Recompute the decoder's activations in the backward pass: less memory, about a third "
        "more compute.",
    )

    def __post_init__(self) -> None:
        check_base_dtype(self.base_dtype)
        if self.gradient_accumulation_steps < 1:
            raise ValueError(
                f"gradient_accumulation_steps must be >= 1, not {self.gradient_accumulation_steps}"
            )


BASE_DTYPES = ("auto", "float32", "bfloat16")


def check_base_dtype(value: str) -> None:
    if value not in BASE_DTYPES:
        raise ValueError(f"base_dtype must be one of {', '.join(BASE_DTYPES)}, not {value!r}")


def load_tokenizer(base_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(base_model_dir: Path, dtype: torch.dtype = torch.float32) -> Any:
    """Base causal LM with its weights in ``dtype`` (``learner.precision.base_dtype_of`` resolves
    a stage's ``base_dtype`` setting). The base is frozen: LoRA weights, heads, optimiser states
    and losses stay float32 whatever it is."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=dtype)
    model.config.use_cache = False
    return model


def with_lora(base: Any, options: TrainOptions, init_adapter: Path | None) -> Any:
    """Wrap ``base`` with a trainable LoRA adapter: continue ``init_adapter`` or start fresh."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is not None:
        logger.info("continuing LoRA adapter from %s", init_adapter)
        return PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
    layers = base.config.num_hidden_layers
    if options.lora_layers < 0:
        raise ValueError(f"lora_layers must be 0 (every layer) or more, not {options.lora_layers}")
    # A model with no more layers than asked gets LoRA on every one (tiny test models).
    last = options.lora_layers if options.lora_layers < layers else 0
    config = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=_targets(base, options),
        layers_to_transform=(list(range(layers - last, layers)) if last else None),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def _targets(base: Any, options: TrainOptions) -> str | list[str]:
    """PEFT target_modules. With ``lora_layers`` PEFT needs names, not "all-linear": the linear
    layers' own names (q_proj, ..., down_proj), the output embedding excluded, as "all-linear"."""
    if not options.lora_layers or options.lora_target_modules != "all-linear":
        return options.lora_target_modules
    head = base.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in base.named_modules()
            if isinstance(module, nn.Linear) and module is not head
        }
    )


def enable_gradient_checkpointing(peft_model: Any) -> None:
    """Recompute each decoder layer's activations in the backward pass (transformers'
    ``gradient_checkpointing_enable`` on the base model).

    Non-reentrant checkpointing (``use_reentrant=False``, the torch default to come): the
    backward reaches the LoRA weights inside a checkpointed layer even though the layer's input
    (the frozen embeddings' output) does not require grad, so PEFT's
    ``enable_input_require_grads`` hook, needed by the reentrant variant, is not (PEFT's
    ``prepare_model_for_kbit_training`` calls it only for ``use_reentrant=True``). transformers
    checkpoints only in training mode, so ``generate`` (which ``sample`` runs in eval mode with
    its KV cache) is unaffected and the model needs no disabling before sampling.
    """
    peft_model.get_base_model().gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False}
    )


def accumulation_scales(micro_batches: int, steps: int) -> list[tuple[float, bool]]:
    """For each of ``micro_batches`` micro-batches: the factor its loss is scaled by and whether
    the optimiser steps after it.

    Groups of ``steps`` micro-batches make one optimiser step; a trailing partial group still
    steps, its losses scaled by 1 / its own size, so every step follows a mean loss. (Why not
    accelerate's ``accumulate``: the reward model interleaves two loaders and PPO has none, so
    accelerate cannot see the end of the data, and it scales a trailing group by 1 / steps.)
    """
    if steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, not {steps}")
    out = []
    for start in range(0, micro_batches, steps):
        size = min(steps, micro_batches - start)
        out += [(1.0 / size, i == size - 1) for i in range(size)]
    return out


def optimizer_steps(micro_batches: int, steps: int) -> int:
    """Optimiser steps over ``micro_batches`` micro-batches at ``steps`` per step."""
    return -(-micro_batches // steps)


def backward_micro_batch(
    accelerator: Any, model: Any, loss: torch.Tensor, scale: float, steps_after: bool
) -> None:
    """Backward of one micro-batch's scaled loss; under DDP the gradient all-reduce waits for
    the micro-batch the optimiser steps after (``no_sync`` on the others)."""
    sync = contextlib.nullcontext() if steps_after else accelerator.no_sync(model)
    with sync:
        accelerator.backward(loss * scale)


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean of the micro-batch rows of one optimiser step (keys absent from a row, such
    as the reward model's comparison metrics in a rating micro-batch, are not counted)."""
    keys = {key for row in rows for key in row}
    out = {}
    for key in sorted(keys):
        values = [row[key] for row in rows if key in row]
        out[key] = sum(values) / len(values)
    return out


def decoder_of(peft_model: Any) -> nn.Module:
    """The transformer body (no LM head); LoRA layers are injected in place, so they apply."""
    return peft_model.get_base_model().get_decoder()


def lm_head_of(peft_model: Any) -> nn.Module:
    return peft_model.get_base_model().get_output_embeddings()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them."""
    positions = attention_mask.long().cumsum(-1) - 1  # (B, T)
    return positions.clamp(min=0)


def hidden_states(
    peft_model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last-layer hidden states of the (LoRA-adapted) decoder. Returns (B, T, H)."""
    out = decoder_of(peft_model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row (left or right padding). Returns (B,)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    return (attention_mask.long() * positions).argmax(dim=-1)


HEAD_INITS = ("zero", "normal")


class ScalarHead(nn.Module):
    """Linear map hidden state -> scalar (reward or value).

    ``init="zero"`` (the default) starts every output at exactly 0, so the first gradient steps
    learn the preference (or the return) instead of first unlearning a random projection of
    hidden states whose norm is large (about 48 for SmolLM2's last layer: a std-1/sqrt(H) head
    spreads an untrained reward by about 0.5, ten times the spread of the learned signal).
    With a zero head the LoRA gets no gradient on the very first step (dL/dh = w = 0); the head
    moves first and the body follows from the second step on. Zero-initialised output layers:
    Zhang et al. 2019, "Fixup Initialization" (https://arxiv.org/abs/1901.09321); the value
    head of Huang et al. 2024 (https://arxiv.org/abs/2403.17031) is initialised from the reward
    head for the same reason. ``init="normal"`` keeps TRL's std 1/sqrt(H+1) start.
    """

    def __init__(self, hidden_size: int, seed: int = 0, init: str = "zero") -> None:
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"head init must be one of {HEAD_INITS}, not {init!r}")
        self.linear = nn.Linear(hidden_size, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            std = 1.0 / (hidden_size + 1) ** 0.5 if init == "normal" else 0.0
            self.linear.weight.copy_(
                torch.randn(self.linear.weight.shape, generator=generator) * std
            )
            self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The head is float32 (a module of its own, never cast with the base): a bfloat16 base's
        # states are upcast first, so rewards and values carry float32's precision.
        return self.linear(hidden.float()).squeeze(-1)  # (..., H) -> (...)


def encode_prompt(tokenizer: Any, prompt: Sequence[ChatMessage]) -> list[int]:
    """The chat-templated prompt up to and including the assistant header, as serving encodes it
    (special-token text inside a message stays text: ``common.chat_encoding``)."""
    return encode_chat(tokenizer, prompt)


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Response tokens followed by the end-of-turn token that ends a served answer
    (``common.end_of_turn.end_of_turn_id``: the chat template's, e.g. Llama 3's ``<|eot_id|>``
    rather than its ``eos_token``; the EOS itself for ChatML).

    Stored answers and corrections come from users (and PPO scores decoded samples), so
    special-token text in them stays text (``encode_text``): a correction holding
    ``<|im_end|>\\n<|im_start|>user`` must not teach the policy to end its turn or open a forged
    one. The one real end of turn is the one appended here.
    """
    return [*encode_text(tokenizer, response), end_of_turn_id(tokenizer)]


def encode_pair(
    tokenizer: Any, prompt: Sequence[ChatMessage], response: str, max_length: int
) -> tuple[list[int], int]:
    """Prompt + response + EOS token ids, and the prompt length, truncated to ``max_length``.

    When too long the prompt is cut from the left, so the response (what is being judged or
    imitated) and the assistant header survive.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = encode_response(tokenizer, response)[:max_length]
    keep = max(0, max_length - len(response_ids))
    prompt_ids = prompt_ids[len(prompt_ids) - keep :] if keep else []
    return prompt_ids + response_ids, len(prompt_ids)


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows. Returns input_ids (B, T) and attention_mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_right_pairs(
    rows: Sequence[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``encode_pair`` rows (ids, prompt length). Returns input_ids, attention_mask
    and the response mask (B, T): 1 on each row's response tokens (EOS included)."""
    ids, mask = pad_right([r for r, _ in rows], pad_id)
    positions = torch.arange(mask.shape[1])  # (T,)
    starts = torch.tensor([start for _, start in rows], dtype=torch.long)[:, None]  # (B, 1)
    return ids, mask, mask * (positions[None, :] >= starts).to(mask.dtype)


def trainable_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def wants_cpu(device: str) -> bool:
    """Resolve a device setting: 'auto' takes CUDA when present; asking for CUDA without it is
    an error rather than a silent fall-back to a CPU run that is 10-100x slower."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device == "cpu" or not torch.cuda.is_available()


def torch_device(device: str) -> torch.device:
    """The torch device for single-process work (evaluation) under a device setting."""
    if wants_cpu(device):
        return torch.device("cpu")
    return torch.device("cuda" if device == "auto" else device)


def make_accelerator(device: str = "auto") -> Any:
    """An ``accelerate.Accelerator`` for this launch (single process, torchrun, DeepSpeed...).

    Without CUDA (or with ``device='cpu'``) it is told ``cpu=True``: then a multi-process launch
    (``accelerate launch --multi_gpu --num_processes N``, i.e. torchrun) becomes MULTI_CPU with
    the gloo backend instead of N unrelated single processes. Under a multi-GPU launch each
    process takes its local GPU. Under an FSDP launch (``LEARNER_DISTRIBUTED=fsdp``) the model
    is sharded instead of replicated, on CPU processes too (``learner.sharding``).
    """
    from learner.sharding import make_accelerator as sharding_aware_accelerator

    return sharding_aware_accelerator(cpu=wants_cpu(device))
