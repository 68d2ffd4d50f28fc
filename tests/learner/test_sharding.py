"""learner.sharding in one process: which modules become FSDP units, and that nothing changes
when the model is not sharded. Sharded runs: tests/learner/ml/test_fsdp_launch.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from learner.modeling import ScalarHead, load_base_model, with_lora
from learner.ppo.config import PPOConfig
from learner.ppo.policy import PolicyWithValue
from learner.rm.config import RewardConfig
from learner.rm.model import RewardModel
from learner.sharding import (
    LayersAndTrainableLeaves,
    check_fsdp_options,
    decoder_layer_classes,
    gathered_state,
    root_unsharded,
    sub_state,
    unwrapped_for_saving,
)


def _units(model: nn.Module, policy: LayersAndTrainableLeaves) -> dict[str, list[nn.Parameter]]:
    """The parameters of each FSDP unit the policy makes: a parameter belongs to its nearest
    wrapped ancestor module, else to the root unit ('')."""
    units: dict[str, list[nn.Parameter]] = {}

    def visit(module: nn.Module, unit: str, name: str) -> None:
        if name and policy(module, recurse=False, nonwrapped_numel=0):
            unit = name
        units.setdefault(unit, []).extend(module.parameters(recurse=False))
        for child_name, child in module.named_children():
            visit(child, unit, f"{name}.{child_name}" if name else child_name)

    visit(model, "", "")
    return units


def _policy_model(model_dir: Path) -> PolicyWithValue:
    base = load_base_model(model_dir)
    return PolicyWithValue(with_lora(base, PPOConfig(), None), ScalarHead(16))


@pytest.mark.parametrize("stage", ["reward", "ppo"])
def test_no_unit_mixes_frozen_and_trained_parameters(tiny_model_dir: Path, stage: str) -> None:
    """So the frozen base gets no gradient memory: FSDP gives a unit's flat parameter a gradient
    for all of it when any of it trains."""
    model: nn.Module = (
        RewardModel.create(tiny_model_dir, RewardConfig())
        if stage == "reward"
        else _policy_model(tiny_model_dir)
    )
    layers = decoder_layer_classes(model)
    assert [c.__name__ for c in layers] == ["LlamaDecoderLayer"]
    units = _units(model, LayersAndTrainableLeaves(layers))
    for name, params in units.items():
        assert len({p.requires_grad for p in params}) <= 1, name
    assert not any(p.requires_grad for p in units[""])  # the root: embeddings, norm, LM head
    trained = [n for n, ps in units.items() if ps and ps[0].requires_grad]
    assert any(n.endswith("lora_A.default") for n in trained)
    assert any(n.endswith(("head.linear", "value_head.linear")) for n in trained)
    assert ("rating" in trained) == (stage == "reward")
    frozen_layers = [n for n, ps in units.items() if n.endswith(("layers.0", "layers.1"))]
    assert len(frozen_layers) == 2  # one unit per decoder layer, holding its frozen weights


def test_the_config_can_name_the_layer_class(tiny_model_dir: Path) -> None:
    model = _policy_model(tiny_model_dir)
    assert decoder_layer_classes(model, ["LlamaDecoderLayer"])[0].__name__ == "LlamaDecoderLayer"
    with pytest.raises(ValueError, match="fsdp_transformer_layer_cls_to_wrap"):
        decoder_layer_classes(model, ["GPT2Block"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fsdp_version": 2, "use_orig_params": True}, "fsdp_version 2"),
        ({"fsdp_version": 1, "use_orig_params": False}, "use_orig_params"),
    ],
)
def test_fsdp_options_the_stages_cannot_train_with_are_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_fsdp_options(SimpleNamespace(**options))
    check_fsdp_options(SimpleNamespace(fsdp_version=1, use_orig_params=True))


def test_without_sharding_the_helpers_change_nothing() -> None:
    from accelerate.utils import DistributedType

    model = nn.Linear(2, 1)
    wrapper = SimpleNamespace(module=model)
    accelerator = SimpleNamespace(
        distributed_type=DistributedType.MULTI_CPU, unwrap_model=lambda m: m.module
    )
    assert gathered_state(accelerator, wrapper) is None  # type: ignore[arg-type]
    with unwrapped_for_saving(accelerator, wrapper) as unwrapped:  # type: ignore[arg-type]
        assert unwrapped is model
    with root_unsharded(accelerator, wrapper):  # type: ignore[arg-type]
        assert not torch.is_autocast_enabled("cpu")  # no autocast, no FSDP context


def test_sub_state_is_a_submodules_state_dict() -> None:
    state = {"policy.a.weight": torch.ones(1), "value_head.linear.bias": torch.zeros(1)}
    assert sub_state(state, "policy.") == {"a.weight": state["policy.a.weight"]}
