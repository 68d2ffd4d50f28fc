"""PPO on the tiny model: runs, moves every trainable parameter, reports finite metrics, saves a
PEFT adapter, and its reference policy is exactly the base model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learner.modeling import ScalarHead, load_base_model, load_tokenizer
from learner.ppo.config import PPOConfig
from learner.ppo.losses import logprobs_of
from learner.ppo.policy import PolicyWithValue, response_logprobs
from learner.ppo.rollout import sample
from learner.ppo.train import PPOResult, run_ppo
from learner.rm.train import RewardResult
from learner.sft.train import SFTResult
from tests.learner.ml.helpers import PPO_STEP_METRICS, PROMPTS, user


@pytest.fixture(scope="module", params=["rloo", "gae"])
def ppo_result(
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    reward_result: RewardResult,
    sft_result: SFTResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> PPOResult:
    config = PPOConfig(
        num_steps=3,
        batch_size=2,
        samples_per_prompt=2,
        advantage_estimator=request.param,
        value_warmup_steps=1,
        mini_batch_size=2,
        ppo_epochs=2,
        max_new_tokens=6,
        learning_rate=1e-2,
        adaptive_kl=True,
        kl_horizon=100,
        kl_estimator="k3",
    )
    return run_ppo(
        tiny_model_dir,
        reward_result.adapter_dir,
        [user(p) for p in PROMPTS],
        config,
        tmp_path_factory.mktemp(f"ppo-{request.param}"),
        init_adapter=sft_result.adapter_dir,
    )


def test_metrics_present_and_finite(ppo_result: PPOResult) -> None:
    assert len(ppo_result.history) == 3
    for row in ppo_result.history:
        for key in PPO_STEP_METRICS:
            assert math.isfinite(row[key]), key
    # Adaptive controller: beta moved away from its initial value after the first update.
    assert ppo_result.history[-1]["objective/kl_coef"] != ppo_result.history[0]["objective/kl_coef"]
    assert ppo_result.metrics == ppo_result.history[-1]


def test_every_trainable_parameter_changes(
    ppo_result: PPOResult, sft_result: SFTResult, tiny_model_dir: Path
) -> None:
    before = load_file(str(sft_result.adapter_dir / "adapter_model.safetensors"))
    after = load_file(str(ppo_result.adapter_dir / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and before
    assert not [k for k in before if torch.equal(before[k], after[k])]
    head = ScalarHead(load_base_model(tiny_model_dir).config.hidden_size, seed=0).state_dict()
    assert ppo_result.value_head_path is not None
    trained = load_file(str(ppo_result.value_head_path))
    changed = [k for k in head if not torch.equal(head[k], trained[k])]
    # The critic trains with GAE only; RLOO needs none and leaves the head at its zero start.
    gae = "ppo-gae" in str(ppo_result.adapter_dir)
    assert changed == (list(head) if gae else [])


def test_adapter_loads_with_plain_peft_and_reference_is_the_base(
    ppo_result: PPOResult, tiny_model_dir: Path
) -> None:
    from peft import PeftModel

    tokenizer = load_tokenizer(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(
        load_base_model(tiny_model_dir), str(ppo_result.adapter_dir)
    )
    model = PolicyWithValue(peft_model, ScalarHead(16)).eval()
    prompts = [user(p) for p in PROMPTS[:4]]
    torch.manual_seed(0)
    rollout = sample(peft_model, tokenizer, prompts, 64, 6, 1.0, 1.0)
    args = (rollout.input_ids, rollout.attention_mask, rollout.context_length, 1.0)
    policy_lp, _ = response_logprobs(model, *args, batch_size=4)
    with model.reference():
        ref_lp, _ = response_logprobs(model, *args, batch_size=1)  # chunking must not matter
    base = load_base_model(tiny_model_dir).eval()
    with torch.no_grad():
        logits = base(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=(rollout.attention_mask.cumsum(-1) - 1).clamp(min=0),
        ).logits
    ctx = rollout.context_length
    base_lp = logprobs_of(logits[:, ctx - 1 : -1], rollout.input_ids[:, ctx:])
    mask = rollout.response_mask.bool()
    torch.testing.assert_close(ref_lp[mask], base_lp[mask], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(policy_lp[mask], base_lp[mask], atol=1e-3)  # the adapter acts


def _kl_stop_config(learning_rate: float, kl_stop: float) -> PPOConfig:
    """Three tiny iterations with a large step, so that one update can cross ``kl_stop``.

    The k3 estimator is non-negative on every token, so whether the rollouts' KL crosses the
    stop does not hang on the tokens drawn: k1 over four answers of six tokens can come out
    negative for a policy that moved (it did after one update for some sampling seeds)."""
    return PPOConfig(
        kl_estimator="k3",
        num_steps=3,
        batch_size=2,
        samples_per_prompt=2,
        mini_batch_size=2,
        max_new_tokens=6,
        learning_rate=learning_rate,
        kl_stop=kl_stop,
    )


def test_stops_before_the_update_that_would_pass_kl_stop(
    tiny_model_dir: Path,
    reward_result: RewardResult,
    sft_result: SFTResult,
    tmp_path: Path,
) -> None:
    # From the SFT adapter the KL to the base is above 0 from the first rollouts: the first
    # iteration still updates (kl_stop never applies to it), the second stops before its update.
    config = _kl_stop_config(learning_rate=1e-2, kl_stop=1e-9)
    result = run_ppo(
        tiny_model_dir,
        reward_result.adapter_dir,
        [user(p) for p in PROMPTS],
        config,
        tmp_path,
        init_adapter=sft_result.adapter_dir,
    )
    assert len(result.history) == 1
    assert result.metrics["objective/kl_at_stop"] >= 1e-9
    assert "objective/update_undone" not in result.metrics  # its start was already past it
    assert result.metrics == result.history[-1]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_an_update_that_crosses_kl_stop_is_undone(
    tiny_model_dir: Path, reward_result: RewardResult, tmp_path: Path
) -> None:
    # From the base the first rollouts have KL 0 (a fresh LoRA's B is zero); one large update
    # moves the policy past the stop, so the second iteration stops and undoes that update:
    # the saved adapter is the fresh one again.
    config = _kl_stop_config(learning_rate=5e-2, kl_stop=1e-3)
    result = run_ppo(
        tiny_model_dir, reward_result.adapter_dir, [user(p) for p in PROMPTS], config, tmp_path
    )
    assert len(result.history) == 1
    assert result.history[0]["objective/kl"] < 1e-3 <= result.metrics["objective/kl_at_stop"]
    assert result.metrics["objective/update_undone"] == 1.0
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(w) == 0 for w in lora_b)
