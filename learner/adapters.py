"""Several LoRA adapters on one frozen base model per process (PEFT multi-adapter).

PPO and the evaluation hold the policy, the reference, the reward model and the evaluation's
reward model. Each would otherwise load its own copy of the base weights (16 GB of bf16 for an
8B model); here they share one: the policy is PEFT's first adapter (named ``default``), the
reference is the same model with every adapter disabled, and a reward model is a further,
frozen adapter that is switched on only for its own forward. This is TRL's "Multi Adapter RL"
layout (https://huggingface.co/docs/trl/multi_adapter_rl) with PEFT's ``load_adapter`` /
``set_adapter`` / ``disable_adapter``
(https://huggingface.co/docs/peft/package_reference/peft_model). PEFT keeps one config per
adapter, so a reward adapter on other layers or modules than the policy's (``lora_layers``)
adds LoRA where it needs it and leaves the policy's modules as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# The name PEFT gives the adapter of ``get_peft_model`` and ``PeftModel.from_pretrained``: a
# model's first adapter (a reward model's own, when it has a base to itself).
FIRST_ADAPTER = "default"
POLICY_ADAPTER = FIRST_ADAPTER  # the policy is the shared base's first adapter
REWARD_ADAPTER = "reward"


def attach_frozen_adapter(peft_model: Any, adapter_dir: Path, name: str) -> None:
    """Load the saved adapter ``adapter_dir`` into ``peft_model`` as ``name``, frozen and
    inactive: the active adapter, its trainability and the model's train/eval mode are kept."""
    if name in peft_model.peft_config:
        raise ValueError(f"the model already has an adapter named {name!r}")
    was_training = peft_model.training
    # is_trainable=False leaves the new adapter's weights with requires_grad False, but also
    # switches the whole model to eval mode.
    peft_model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
    peft_model.train(was_training)
    trainable = [n for n, p in adapter_parameters(peft_model, name) if p.requires_grad]
    if trainable:
        raise RuntimeError(f"adapter {name!r} loaded trainable: {trainable[:3]}")
    logger.info("attached adapter %r from %s to the shared base model", name, adapter_dir)


def adapter_parameters(peft_model: Any, name: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The LoRA weights of adapter ``name`` (PEFT names them ``...lora_A.<name>.weight``)."""
    return [(n, p) for n, p in peft_model.named_parameters() if f".{name}." in n and "lora_" in n]


@contextmanager
def adapter_active(peft_model: Any, name: str) -> Iterator[None]:
    """Run ``peft_model`` as adapter ``name``: frozen, in eval mode, without gradients.

    A no-op when ``name`` is already the active adapter (a reward model on its own base, also
    while it trains). Otherwise everything is put back on exit, also after an exception: the
    active adapter, the train/eval mode and every parameter's ``requires_grad``. PEFT's
    ``set_adapter`` makes the adapter it activates trainable and every other one frozen
    (peft 0.21 ``BaseTuner.set_adapter``); ``inference_mode=True`` freezes the one activated
    too, and the saved flags then give the policy adapter its ``requires_grad=True`` back, so
    the optimiser and DDP see the same trainable parameters before and after.
    """
    previous = peft_model.active_adapter
    if previous == name:
        yield
        return
    flags = [(p, p.requires_grad) for p in peft_model.parameters()]
    was_training = peft_model.training
    try:
        peft_model.set_adapter(name, inference_mode=True)
        peft_model.eval()
        with torch.no_grad():
            yield
    finally:
        peft_model.set_adapter(previous)
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
        peft_model.train(was_training)
