"""Which dtype a stage loads the frozen base model in (its ``base_dtype`` option).

``float32`` and ``bfloat16`` are taken as given. ``auto`` picks bfloat16 where the hardware
computes it natively and float32 elsewhere:

- CUDA: bfloat16 when ``torch.cuda.is_bf16_supported()`` (Ampere and later; the check PyTorch
  documents, https://docs.pytorch.org/docs/stable/cuda.html), float32 otherwise.
- CPU: bfloat16 when the CPU has AVX-512 BF16 or AMX (``common.cpu_features``) and
  ``CPU_BF16_DEFAULT`` says bfloat16 trained faster there (docs/measurements.md, "Training in
  bfloat16 on the CPU"); float32 otherwise, since emulated bfloat16 ran 4x slower.

Only the base is reduced: PEFT creates LoRA weights in float32 under a bfloat16 base
(``autocast_adapter_dtype=True``, the default of ``get_peft_model`` and
``PeftModel.from_pretrained``: https://huggingface.co/docs/peft/package_reference/peft_model),
so gradients, AdamW states and saved adapters are float32; the scalar heads are float32 modules
fed upcast states, and logits are upcast before any log-softmax.
That is the usual bf16 LoRA recipe: the frozen weights only need to be read, while the small
trained weights need float32's mantissa for updates of 1e-4 of their size to register.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from common.cpu_features import cpu_has_native_bf16
from learner.modeling import check_base_dtype, wants_cpu

logger = logging.getLogger(__name__)

# Whether ``auto`` takes bfloat16 on a CPU with native bf16: set from a measured reward-model
# and PPO training step (docs/measurements.md, "Training in bfloat16 on the CPU").
CPU_BF16_DEFAULT = True


def resolve_base_dtype(setting: str, on_cpu: bool) -> torch.dtype:
    """The torch dtype for a ``base_dtype`` setting on a CPU (``on_cpu``) or CUDA device."""
    check_base_dtype(setting)
    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        _warn_if_emulated(on_cpu)
        return torch.bfloat16
    if on_cpu:
        native = CPU_BF16_DEFAULT and cpu_has_native_bf16()
    else:
        native = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native else torch.float32


def base_dtype_of(config: Any) -> torch.dtype:
    """The base dtype of a stage config (anything with ``base_dtype`` and ``device``)."""
    dtype = resolve_base_dtype(config.base_dtype, wants_cpu(config.device))
    logger.info("base weights in %s (base_dtype=%s)", dtype, config.base_dtype)
    return dtype


def _warn_if_emulated(on_cpu: bool) -> None:
    native = cpu_has_native_bf16() if on_cpu else torch.cuda.is_bf16_supported()
    if not native:
        logger.warning(
            "base_dtype=bfloat16 on a %s without native bf16: emulated, expect it slower than "
            "float32",
            "CPU" if on_cpu else "GPU",
        )
