"""One frozen base per process: PPO and the evaluation run the policy, the reference and the
reward model as adapters on one copy of the base weights, and the numbers stay those of
separate models (attached reward model = standalone one, reference = bare base)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import learner.evaluate as ev
import learner.modeling
import learner.ppo.train as ppo_train
from learner.adapters import POLICY_ADAPTER, REWARD_ADAPTER, adapter_parameters
from learner.modeling import TrainOptions, load_base_model, load_tokenizer, with_lora
from learner.ppo.config import PPOConfig
from learner.ppo.losses import logprobs_of
from learner.ppo.policy import PolicyWithValue
from learner.ppo.rollout import sample
from learner.rm.model import RewardModel, RewardNorm
from tests.learner.ml.helpers import PROMPTS, user

# The policy on the first layer's attention, the reward model on every linear layer of the last
# layer: the two adapters' configs differ, and each has modules the other lacks.
POLICY_TARGETS = r".*layers\.0\.self_attn\.(q_proj|v_proj)"
REWARD_OPTIONS = TrainOptions(lora_layers=1, lora_r=4, seed=3)
ANSWERS = ["Four.", "Hi there, how are you?", "Sure.", "It jumps.", "You are kind.", "4"]


def _randomise_lora_b(peft_model: Any, seed: int) -> None:
    """A fresh LoRA's B is zero (the adapter is the identity): give it weights that act."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved reward model in the stored format, with LoRA and head weights that act."""
    model = RewardModel.create(
        tiny_model_dir, REWARD_OPTIONS, head_init="normal", pooling="mean+sum"
    )
    _randomise_lora_b(model.backbone, seed=1)
    model.norm = RewardNorm(mean=0.3, std=2.0)
    out = tmp_path_factory.mktemp("reward-adapter")
    model.save(out)
    return out


def _policy(tiny_model_dir: Path) -> Any:
    """base + a policy LoRA, the same weights at every call."""
    torch.manual_seed(0)  # LoRA A's random start
    options = PPOConfig(lora_target_modules=POLICY_TARGETS)
    peft_model = with_lora(load_base_model(tiny_model_dir), options, None)
    _randomise_lora_b(peft_model, seed=2)
    return peft_model


def _lora_flags(peft_model: Any, name: str) -> set[bool]:
    return {p.requires_grad for _, p in adapter_parameters(peft_model, name)}


def _base_storages(peft_model: Any) -> set[int]:
    """Storages of the base weights (everything but LoRA) of a PEFT model."""
    return {
        p.untyped_storage().data_ptr()
        for name, p in peft_model.named_parameters()
        if "lora_" not in name
    }


def test_attached_reward_model_scores_as_the_standalone_one(
    tiny_model_dir: Path, reward_dir: Path
) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    policy = _policy(tiny_model_dir).train()
    attached = RewardModel.attach(policy, reward_dir, REWARD_ADAPTER, tokenizer)
    standalone = RewardModel.load(tiny_model_dir, reward_dir)
    prompts = [user(p) for p in PROMPTS]
    expected = standalone.score(prompts, ANSWERS, batch_size=4, normalized=True)
    scores = attached.score(prompts, ANSWERS, batch_size=4, normalized=True)
    torch.testing.assert_close(scores, expected)
    with policy.disable_adapter():  # the reward adapter acts: the bare body scores otherwise
        assert not torch.allclose(attached.score(prompts, ANSWERS, 4, True), expected)
    # Scoring put everything back: the policy adapter active and trainable, training mode.
    assert policy.active_adapter == POLICY_ADAPTER and policy.training
    assert _lora_flags(policy, POLICY_ADAPTER) == {True}
    assert _lora_flags(policy, REWARD_ADAPTER) == {False}
    assert _base_storages(attached.backbone) == _base_storages(policy)


def test_scoring_puts_the_policy_back_after_an_error(
    tiny_model_dir: Path, reward_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = _policy(tiny_model_dir).train()
    attached = RewardModel.attach(
        policy, reward_dir, REWARD_ADAPTER, load_tokenizer(tiny_model_dir)
    )
    seen: list[tuple[str, bool, bool]] = []

    def failing_forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append((policy.active_adapter, policy.training, torch.is_grad_enabled()))
        raise RuntimeError("out of memory")

    monkeypatch.setattr("learner.rm.model.hidden_states", failing_forward)
    with pytest.raises(RuntimeError, match="out of memory"):
        attached(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    assert seen == [(REWARD_ADAPTER, False, False)]  # reward adapter, eval, no gradients
    assert policy.active_adapter == POLICY_ADAPTER and policy.training
    assert _lora_flags(policy, POLICY_ADAPTER) == {True}
    assert _lora_flags(policy, REWARD_ADAPTER) == {False}


def test_policy_samples_and_reference_are_unchanged_by_the_attached_reward_model(
    tiny_model_dir: Path, reward_dir: Path
) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    alone = _policy(tiny_model_dir).eval()
    shared = _policy(tiny_model_dir).eval()  # the same weights (seeded), plus a reward model
    attached = RewardModel.attach(shared, reward_dir, REWARD_ADAPTER, tokenizer)
    prompts = [user(p) for p in PROMPTS[:4]]
    attached.score(prompts, ANSWERS[:4])  # switches to the reward adapter and back
    rollouts = []
    for peft_model in (alone, shared):
        torch.manual_seed(0)
        rollouts.append(sample(peft_model, tokenizer, prompts, 64, 6, 1.0, 1.0))
    assert torch.equal(rollouts[0].input_ids, rollouts[1].input_ids)  # the policy sampled
    rollout = rollouts[1]
    args = (rollout.input_ids, rollout.attention_mask, rollout.context_length)
    model = PolicyWithValue(shared, learner.modeling.ScalarHead(16)).eval()
    with torch.no_grad():
        policy_logits, _ = model(*args)
        with model.reference():
            ref_logits, _ = model(*args)
        base = load_base_model(tiny_model_dir).eval()
        positions = (rollout.attention_mask.cumsum(-1) - 1).clamp(min=0)
        base_logits = base(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=positions,
        ).logits[:, rollout.context_length - 1 : -1]
    responses = rollout.input_ids[:, rollout.context_length :]
    mask = rollout.response_mask.bool()
    ref_lp, base_lp = logprobs_of(ref_logits, responses), logprobs_of(base_logits, responses)
    torch.testing.assert_close(ref_lp[mask], base_lp[mask], rtol=1e-5, atol=1e-5)
    policy_lp = logprobs_of(policy_logits, responses)
    assert not torch.allclose(policy_lp[mask], base_lp[mask], atol=1e-3)  # the policy acts


class BaseLoads:
    """Counts base-model loads (every module's ``load_base_model``) during a stage and keeps
    the policy and reward model the stage scored with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.models: list[tuple[PolicyWithValue, RewardModel]] = []
        original = learner.modeling.load_base_model

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        ours = [m for name, m in sys.modules.items() if name.startswith("learner.")]
        for module in ours:
            if getattr(module, "load_base_model", None) is original:
                monkeypatch.setattr(module, "load_base_model", counting)

    def spy(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function(model, ..., reward_model, ...)`` recording its two models."""

        def spied(*args: Any, **kwargs: Any) -> Any:
            policy = next(a for a in args if isinstance(a, PolicyWithValue))
            reward = next(a for a in args if isinstance(a, RewardModel))
            self.models.append((policy, reward))
            return function(*args, **kwargs)

        return spied

    def embedding_storages(self) -> set[int]:
        return {
            module.get_input_embeddings().weight.untyped_storage().data_ptr()
            for policy, reward in self.models
            for module in (policy.policy, reward.backbone)
        }

    def base_storages(self) -> Iterator[set[int]]:
        for policy, reward in self.models:
            yield _base_storages(policy.policy)
            yield _base_storages(reward.backbone)


def _assert_one_base(loads: BaseLoads) -> None:
    assert loads.models, "the stage never scored"
    assert loads.calls == 1
    assert len(loads.embedding_storages()) == 1
    storages = list(loads.base_storages())
    assert all(s == storages[0] for s in storages) and storages[0]


def test_ppo_holds_one_base_and_trains_only_the_policy(
    tiny_model_dir: Path, reward_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = BaseLoads(monkeypatch)
    monkeypatch.setattr(ppo_train, "_score_rollout", loads.spy(ppo_train._score_rollout))
    optimisers: list[torch.optim.Optimizer] = []
    build_optimiser = ppo_train._optimizer

    def keep_optimiser(*args: Any) -> torch.optim.Optimizer:
        optimisers.append(build_optimiser(*args))
        return optimisers[-1]

    monkeypatch.setattr(ppo_train, "_optimizer", keep_optimiser)
    config = PPOConfig(
        num_steps=2,
        batch_size=2,
        mini_batch_size=2,
        max_new_tokens=4,
        learning_rate=1e-2,
        lora_target_modules=POLICY_TARGETS,
        advantage_estimator="gae",  # the value head trains too
        value_warmup_steps=0,
    )
    result = ppo_train.run_ppo(
        tiny_model_dir, reward_dir, [user(p) for p in PROMPTS], config, tmp_path
    )
    assert len(result.history) == 2
    _assert_one_base(loads)
    policy, reward = loads.models[-1]
    names = {id(p): n for n, p in policy.named_parameters()}
    held = [names[id(p)] for group in optimisers[0].param_groups for p in group["params"]]
    assert held and all(
        (".lora_" in n and f".{POLICY_ADAPTER}." in n) or n.startswith("value_head.") for n in held
    )
    assert len(held) == sum(p.requires_grad for p in policy.parameters())
    assert _lora_flags(policy.policy, REWARD_ADAPTER) == {False}
    assert not any(p.requires_grad for p in reward.head.parameters())
    # The saved adapter is the policy's alone, as before: no reward adapter beside or below it.
    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert saved and not any(REWARD_ADAPTER in key for key in saved)
    assert not (result.adapter_dir / REWARD_ADAPTER).exists()


def test_evaluation_holds_one_base(
    tiny_model_dir: Path, reward_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = BaseLoads(monkeypatch)
    monkeypatch.setattr(ev, "_sanity", loads.spy(ev._sanity))
    config = ev.EvalConfig(max_new_tokens=4, sanity_max_new_tokens=4, batch_size=4)
    result = ev.evaluate_policy(
        tiny_model_dir, None, reward_dir, [user(p) for p in PROMPTS], config
    )
    _assert_one_base(loads)
    # The fresh policy adapter is the base: same samples, same scores, no KL.
    assert result.reward_gain == 0.0 and result.kl == 0.0
