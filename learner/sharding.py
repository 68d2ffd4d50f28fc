"""Fully sharded data parallelism (FSDP) for the training stages, when the launch asks for it.

``LEARNER_DISTRIBUTED=fsdp`` launches each stage with ``accelerate launch --config_file``
``learner/trainers/accelerate/fsdp.yaml``: accelerate then sets ``ACCELERATE_USE_FSDP`` and
the ``FSDP_*`` options in every process, and ``Accelerator.prepare`` wraps the model in torch's
``FullyShardedDataParallel`` (FSDP1) instead of ``DistributedDataParallel``, so each rank holds
1/N of the frozen base instead of all of it. What that changes for the stages lives here:

- ``make_accelerator``: accelerate enables FSDP for accelerator devices only; CPU processes
  (gloo: the tests, a CPU host) get the same wrapping by turning it on after the fact.
- ``prepare_for_sharding``: the wrap policy (each decoder layer one unit, each trainable leaf
  module one unit of its own) and, on CPU, rank 0's initial weights on every rank.
- ``root_unsharded``: code that calls the model other than through its ``forward``
  (``generate``, PPO's scoring of a rollout) needs the root unit's parameters whole.
- ``gathered_state`` and ``unwrapped_for_saving``: saving an adapter gathers the full weights
  on the main process and hands them to PEFT under the module names it knows.

References: https://pytorch.org/docs/stable/fsdp.html and
https://huggingface.co/docs/accelerate/usage_guides/fsdp.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

logger = logging.getLogger(__name__)

# The decoder layer classes of the base model, by name (transformers' ``_no_split_modules``).
NO_SPLIT_ATTRIBUTE = "_no_split_modules"


def fsdp_launched() -> bool:
    """Did ``accelerate launch`` get a config with ``distributed_type: FSDP``? (it exports
    ``ACCELERATE_USE_FSDP=true`` to every process it starts)"""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def make_accelerator(cpu: bool) -> Any:
    """An ``accelerate.Accelerator`` for this launch; under an FSDP launch it shards, also on
    CPU processes.

    accelerate turns an FSDP config into FSDP only for GPU-type launches and runs CPU processes
    as plain DDP (MULTI_CPU). torch's FSDP does run on CPU with gloo (``device_id`` cpu), so
    there the plugin accelerate would have used is installed by hand; everything after that
    (``prepare``, ``clip_grad_norm_``, ``no_sync``) is accelerate's FSDP path, the one GPUs
    take.
    """
    from accelerate import Accelerator

    accelerator = _cpu_fsdp_accelerator() if cpu and fsdp_launched() else Accelerator(cpu=cpu)
    if is_sharded(accelerator):
        check_fsdp_options(accelerator.state.fsdp_plugin)
    return accelerator


def _cpu_fsdp_accelerator() -> Any:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    # The other options from the FSDP_* variables accelerate set. sync_module_states: torch's
    # FSDP does it on a GPU (and accelerate's plugin refuses it without one);
    # prepare_for_sharding broadcasts rank 0's weights itself instead.
    plugin = FullyShardedDataParallelPlugin(sync_module_states=False)
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.fsdp_plugin = plugin
        # Both shared states: each AcceleratorState() (accelerate makes them on the way) copies
        # PartialState's fields over its own. The device: accelerate numbers CPU devices by
        # local rank (cpu:1), and FSDP's device_id must be the one torch computes on, cpu.
        for state in (PartialState(), accelerator.state):
            state.distributed_type = DistributedType.FSDP
            state.device = torch.device("cpu")
        logger.info("FSDP on %d CPU processes (gloo)", accelerator.num_processes)
    return accelerator


def check_fsdp_options(plugin: Any) -> None:
    """Refuse FSDP options the stages cannot train with. FSDP2 (``fully_shard``) keeps
    parameters as DTensors and unshards through other calls than ``root_unsharded`` makes: the
    stages are written for FSDP1 with ``use_orig_params``."""
    if plugin.fsdp_version != 1:
        raise ValueError(
            f"the learner shards with FSDP1 (fsdp_version: 1), not fsdp_version "
            f"{plugin.fsdp_version}: see learner/trainers/accelerate/fsdp.yaml"
        )
    if not plugin.use_orig_params:
        raise ValueError(
            "FSDP needs fsdp_use_orig_params: true here: the optimiser is built on the "
            "original (LoRA) parameters before prepare"
        )


def is_sharded(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return bool(accelerator.distributed_type == DistributedType.FSDP)


def prepare_for_sharding(accelerator: Any, model: nn.Module) -> None:
    """Call before ``accelerator.prepare(model, ...)``; nothing unless FSDP shards the model.

    The wrap policy replaces the one in the accelerate config, because it depends on the model:
    every decoder layer is a unit (the class named in the config's
    ``fsdp_transformer_layer_cls_to_wrap``, else the base model's ``_no_split_modules``), and
    so is every leaf module whose parameters are all trainable (LoRA A and B, the reward and
    value heads, the rating threshold). A unit that mixes frozen and trainable parameters gets
    a gradient for all of them (https://pytorch.org/docs/stable/fsdp.html, ``use_orig_params``),
    so keeping the trained ones in units of their own keeps the frozen base free of gradient
    memory: the same split as PEFT's ``fsdp_auto_wrap_policy``.
    """
    if not is_sharded(accelerator):
        return
    plugin = accelerator.state.fsdp_plugin
    layers = decoder_layer_classes(model, plugin.transformer_cls_names_to_wrap)
    plugin.auto_wrap_policy = LayersAndTrainableLeaves(layers, base_dtype(model))
    if accelerator.device.type == "cpu":
        broadcast_from_main(model)


def decoder_layer_classes(model: nn.Module, names: list[str] | None = None) -> tuple[type, ...]:
    """The classes of ``model``'s modules named in ``names`` (default: every
    ``_no_split_modules`` found in ``model``)."""
    wanted = set(names or [])
    if not wanted:
        for module in model.modules():
            wanted.update(getattr(type(module), NO_SPLIT_ATTRIBUTE, None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in wanted}
    if not classes:
        raise ValueError(
            f"no decoder layer class to shard by: none of {sorted(wanted)} is in the model "
            "(set fsdp_transformer_layer_cls_to_wrap in the accelerate config)"
        )
    return tuple(sorted(classes, key=lambda c: c.__name__))


def base_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s frozen base: that of its input embeddings (or its first
    parameter's)."""
    for module in model.modules():  # PolicyWithValue and RewardModel hold the PEFT model
        embeddings: Any = getattr(module, "get_input_embeddings", None)
        if callable(embeddings):
            return cast(torch.dtype, embeddings().weight.dtype)
    return next(model.parameters()).dtype


class LayersAndTrainableLeaves:
    """FSDP1 auto-wrap policy (the ``(module, recurse, nonwrapped_numel) -> bool`` form):
    one unit per decoder layer and per leaf module whose parameters are all trainable, or all
    of another dtype than the base (a frozen float32 LoRA adapter on a bfloat16 base, such as
    PPO's reward adapter: FSDP1 flattens a unit into one tensor of one dtype)."""

    def __init__(self, layer_classes: tuple[type, ...], base: torch.dtype | None = None) -> None:
        self.layer_classes = layer_classes
        self.base = base

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if recurse:
            return True  # look inside everything; units are decided bottom-up
        return (
            isinstance(module, self.layer_classes)
            or is_trainable_leaf(module)
            or (self.base is not None and is_leaf_of_other_dtype(module, self.base))
        )


def is_leaf_of_other_dtype(module: nn.Module, base: torch.dtype) -> bool:
    params = list(module.parameters(recurse=False))
    has_children = next(module.children(), None) is not None
    return bool(params) and not has_children and all(p.dtype != base for p in params)


def is_trainable_leaf(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    has_children = next(module.children(), None) is not None
    return bool(params) and not has_children and all(p.requires_grad for p in params)


@torch.no_grad()
def broadcast_from_main(model: nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers (what FSDP's ``sync_module_states``
    does on GPUs): ranks seeded apart (PPO's sampling) start from one model."""
    import torch.distributed as dist

    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


@contextlib.contextmanager
def root_unsharded(accelerator: Any, prepared: nn.Module) -> Iterator[None]:
    """Context in which the unwrapped model may be called other than through the FSDP root's
    ``forward``: ``generate``, or ``PolicyWithValue.forward`` on the unwrapped module.

    FSDP unshards a unit's parameters in that unit's ``forward`` only. The decoder layers and
    the heads are units of their own and unshard themselves when called; the root unit (the
    embeddings, the final norm, the LM head) is whole here, for this context only
    (``summon_full_params(recurse=False)``: one layer at a time stays the peak, not the whole
    model). Under mixed precision the root's parameters come back in their stored dtype while
    the layers compute in bf16, so the calls also run under ``accelerator.autocast()`` (a
    no-op without mixed precision). Nothing at all when the model is not sharded.
    """
    if not is_sharded(accelerator):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    with (
        FullyShardedDataParallel.summon_full_params(prepared, recurse=False, writeback=False),
        accelerator.autocast(),
    ):
        yield


def gathered_state(accelerator: Any, prepared: nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded model, on the main process (``None`` elsewhere), or
    ``None`` when the model is not sharded (each process then holds it whole).

    Every process must call it (the gather is collective). torch's ``get_model_state_dict``
    with ``full_state_dict`` (https://pytorch.org/docs/stable/distributed.checkpoint.html,
    ``torch.distributed.checkpoint.state_dict``): with ``cpu_offload`` the gathered copy lands
    in the main process's host memory only, unit by unit, so no GPU ever holds the whole model;
    the callers keep only the adapter and heads of it. Not on CPU processes: there the offload
    frees the very tensors it hands back (segmentation fault, torch 2.13), so every rank
    gathers the (small, CPU-sized) model and all but the main one drop it.
    """
    if not is_sharded(accelerator):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    offload = accelerator.device.type != "cpu"
    options = StateDictOptions(full_state_dict=True, cpu_offload=offload)
    state = get_model_state_dict(prepared, options=options)
    return cast(dict[str, torch.Tensor], state) if accelerator.is_main_process else None


@contextlib.contextmanager
def unwrapped_for_saving(accelerator: Any, prepared: nn.Module) -> Iterator[Any]:
    """The model as it was before ``prepare``, for the main process to save from: accelerate's
    ``unwrap_model``, and under FSDP also every nested unit swapped for the module it wraps,
    until the context ends.

    PEFT's ``save_pretrained(state_dict=...)`` picks its adapter's entries by the names of its
    modules; inside a decoder layer unit they carry ``_fsdp_wrapped_module``, which the
    gathered (clean) names lack, and the adapter file would come out empty without an error.
    """
    model = accelerator.unwrap_model(prepared)
    if not is_sharded(accelerator):
        yield model
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FullyShardedDataParallel):
                parent._modules[name] = child.module
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (a submodule's state dict), prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
