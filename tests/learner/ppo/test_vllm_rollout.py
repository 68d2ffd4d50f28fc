"""The colocated vLLM rollouts (learner.ppo.vllm_rollout) against a recording stand-in for
``vllm.LLM``: each batch hands over the policy's current LoRA under a new id, stops on the
end-of-turn ids, seeds every row, and vLLM's answers become the ``Rollout`` the decoder gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from common.end_of_turn import end_of_turn_ids
from learner.modeling import load_base_model, load_tokenizer
from learner.ppo.config import PPOConfig
from learner.ppo.rollout import sample
from learner.ppo.vllm_rollout import (
    VLLMApi,
    VLLMRolloutEngine,
    answer_tokens,
    llm_args,
    save_active_adapter,
    vllm_lora_rank,
)
from schemas.events import ChatMessage
from tests.support.engines import write_lora_adapter

PROMPTS = [(ChatMessage(role="user", content=text),) for text in ("Hi", "What is two plus two?")]


@dataclass
class _Completion:
    token_ids: list[int]
    finish_reason: str
    stop_reason: int | str | None = None


@dataclass
class _FakeLLM:
    """Records what each ``generate`` was given (and the adapter files while they exist)."""

    answers: list[_Completion]
    calls: list[dict[str, Any]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    shut_down: bool = False

    def __post_init__(self) -> None:
        core = SimpleNamespace(shutdown=self._shutdown)
        self.llm_engine = SimpleNamespace(remove_lora=self.removed.append, engine_core=core)

    def _shutdown(self) -> None:
        self.shut_down = True

    def generate(self, prompts: list[Any], params: list[Any], **kwargs: Any) -> list[Any]:
        lora = kwargs["lora_request"]
        weights = load_file(str(Path(lora[2]) / "adapter_model.safetensors")) if lora else None
        self.calls.append({"prompts": prompts, "params": params, "lora": lora, "weights": weights})
        return [SimpleNamespace(outputs=[a]) for a in self.answers[: len(prompts)]]


def _api(llm: _FakeLLM) -> VLLMApi:
    return VLLMApi(
        llm=lambda **_: llm,
        sampling_params=lambda **kwargs: kwargs,
        lora_request=lambda name, lora_id, path: (name, lora_id, path),
    )


@pytest.fixture
def policy(tiny_model_dir: Path, tmp_path: Path) -> Any:
    from peft import PeftModel

    adapter = write_lora_adapter(tiny_model_dir, tmp_path / "lora", seed=1)
    base = load_base_model(tiny_model_dir)
    return PeftModel.from_pretrained(base, str(adapter), is_trainable=True)


def _lora_b(model: Any) -> torch.nn.Parameter:
    return next(p for name, p in model.named_parameters() if "lora_B" in name)


def test_each_batch_hands_over_the_current_adapter_under_a_new_id(
    policy: Any, tiny_model_dir: Path
) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    eos = tokenizer.eos_token_id
    llm = _FakeLLM([_Completion([5, 6, eos], "stop"), _Completion([7, 8, 9], "length")])
    engine = VLLMRolloutEngine.for_stage(tiny_model_dir, PPOConfig(), _api(llm))
    torch.manual_seed(0)
    sample(policy, tokenizer, PROMPTS, 64, 3, 0.9, 0.95, engine=engine)
    with torch.no_grad():
        _lora_b(policy).add_(1.0)  # an update between two iterations
    sample(policy, tokenizer, PROMPTS, 64, 3, 0.9, 0.95, engine=engine)
    first, second = llm.calls
    assert [first["lora"][1], second["lora"][1]] == [1, 2]
    assert first["lora"][0] != second["lora"][0]
    assert llm.removed == [1]  # the first policy's adapter is dropped when the second comes
    current = get_peft_model_state_dict(policy)
    assert second["weights"].keys() == current.keys()
    assert all(torch.equal(second["weights"][k], v) for k, v in current.items())
    assert any(not torch.equal(first["weights"][k], v) for k, v in current.items())
    params = first["params"]
    stop_ids = end_of_turn_ids(tokenizer, policy.generation_config)
    assert all(p["stop_token_ids"] == stop_ids for p in params)
    assert all(
        (p["temperature"], p["top_p"], p["top_k"], p["max_tokens"]) == (0.9, 0.95, 0, 3)
        for p in params
    )
    assert len({p["seed"] for p in params}) == len(params)  # every row its own stream
    assert [p["prompt_token_ids"] for p in first["prompts"]] == [
        p["prompt_token_ids"] for p in second["prompts"]
    ]
    torch.manual_seed(0)
    sample(policy, tokenizer, PROMPTS, 64, 3, 0.9, 0.95, engine=engine)
    assert [p["seed"] for p in llm.calls[2]["params"]] == [p["seed"] for p in params]
    engine.close()
    assert llm.shut_down


def test_vllm_answers_become_the_rollout(policy: Any, tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    eos = tokenizer.eos_token_id
    answers = [_Completion([5, 6, eos], "stop"), _Completion([7, 8, 9, 10], "length")]
    engine = VLLMRolloutEngine.for_stage(tiny_model_dir, PPOConfig(), _api(_FakeLLM(answers)))
    rollout = sample(policy, tokenizer, PROMPTS, 64, 4, 1.0, 1.0, engine=engine)
    responses = rollout.input_ids[:, rollout.context_length :]
    pad = tokenizer.pad_token_id
    assert responses.tolist() == [[5, 6, eos, pad], [7, 8, 9, 10]]
    assert rollout.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert rollout.has_eos.tolist() == [True, False]
    assert rollout.texts == [tokenizer.decode([5, 6]), tokenizer.decode([7, 8, 9, 10])]
    prompt_lengths = rollout.attention_mask[:, : rollout.context_length].sum(1).tolist()
    assert prompt_lengths[0] < prompt_lengths[1]  # left-padded prompts of their own lengths


def test_the_reference_samples_without_an_adapter(policy: Any, tiny_model_dir: Path) -> None:
    llm = _FakeLLM([_Completion([5], "length")] * 2)
    engine = VLLMRolloutEngine.for_stage(tiny_model_dir, PPOConfig(), _api(llm))
    with policy.disable_adapter():
        sample(policy, load_tokenizer(tiny_model_dir), PROMPTS, 64, 1, 1.0, 1.0, engine=engine)
    assert llm.calls[0]["lora"] is None


def test_stop_token_and_finish_reasons() -> None:
    stop = [2, 9]
    dropped = SimpleNamespace(outputs=[_Completion([5, 6], "stop", stop_reason=9)])
    assert answer_tokens(dropped, stop) == [5, 6, 9]
    kept = SimpleNamespace(outputs=[_Completion([5, 2], "stop", stop_reason=None)])
    assert answer_tokens(kept, stop) == [5, 2]
    with pytest.raises(RuntimeError, match="abort"):
        answer_tokens(SimpleNamespace(outputs=[_Completion([5], "abort")]), stop)


def test_llm_args_and_ranks(tmp_path: Path) -> None:
    config = PPOConfig(lora_r=12, vllm_gpu_memory_utilization=0.25, max_new_tokens=64)
    args = llm_args(tmp_path, config)
    assert args["model"] == str(tmp_path) and args["enable_lora"] is True
    assert (args["max_lora_rank"], args["gpu_memory_utilization"], args["dtype"]) == (
        16,
        0.25,
        "bfloat16",
    )
    assert args["max_model_len"] == config.max_prompt_length + 64
    assert [vllm_lora_rank(r) for r in (1, 4, 8, 300)] == [1, 8, 8, 320]
    with pytest.raises(ValueError, match="exceeds"):
        vllm_lora_rank(1024)
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        PPOConfig(vllm_gpu_memory_utilization=1.5)


def test_an_adapter_not_named_default_is_saved_where_peft_puts_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    adapter = write_lora_adapter(tiny_model_dir, tmp_path / "lora", seed=2)
    model = PeftModel.from_pretrained(
        load_base_model(tiny_model_dir), str(adapter), adapter_name="policy"
    )
    path = save_active_adapter(model, tmp_path / "out")
    assert path == tmp_path / "out" / "policy"
    assert (path / "adapter_config.json").is_file()
