"""PPO rollouts through the batch decoder (learner.ppo.rollout_engines) are those of ``generate``:
the same greedy ``Rollout`` with a LoRA policy, stopped at the chat template's end of turn when
the tokenizer's EOS is another token; seeded sampling repeats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from learner.modeling import encode_prompt, load_base_model, load_tokenizer
from learner.ppo.config import PPOConfig
from learner.ppo.rollout import Rollout, sample
from learner.ppo.rollout_engines import (
    DecodeLoopEngine,
    GenerateEngine,
    RolloutRequest,
    make_engine,
    open_rollout_engine,
    resolve_engine_name,
)
from schemas.events import ChatMessage
from tests.support.engines import write_lora_adapter
from tests.support.llama3_style import END_OF_TEXT, EOT, write_llama3_style_model_dir


def _user(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage(role="user", content=text),)


# Prompts of differing lengths; the first twice, as PPO samples each prompt several times.
PROMPTS = [
    _user("What is two plus two?"),
    _user("Hi"),
    _user("The quick brown fox jumps over the lazy dog, and then what happens?"),
    _user("What is two plus two?"),
]


def _assert_same(a: Rollout, b: Rollout) -> None:
    assert a.context_length == b.context_length
    for name in ("input_ids", "attention_mask", "response_mask", "has_eos"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.texts == b.texts


@pytest.fixture(scope="module")
def policy(lively_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A trainable LoRA policy whose B weights are non-zero, in training mode (as PPO holds it)."""
    from peft import PeftModel

    adapter = write_lora_adapter(lively_model_dir, tmp_path_factory.mktemp("lora"), seed=1)
    base = load_base_model(lively_model_dir)
    return PeftModel.from_pretrained(base, str(adapter), is_trainable=True).train()


def test_greedy_rollouts_are_generates(policy: Any, lively_model_dir: Path) -> None:
    tokenizer = load_tokenizer(lively_model_dir)
    args = (policy, tokenizer, PROMPTS, 64, 10, 1.0, 1.0)
    decoded = sample(*args, greedy=True, engine="decode_loop")
    _assert_same(decoded, sample(*args, greedy=True, engine="generate"))
    assert policy.training  # sampling put it back in training mode
    with policy.disable_adapter():
        reference = sample(*args, greedy=True, engine="decode_loop")
    assert not torch.equal(reference.input_ids, decoded.input_ids)  # the adapter was on


def test_seeded_sampled_rollouts_repeat(policy: Any, lively_model_dir: Path) -> None:
    tokenizer = load_tokenizer(lively_model_dir)

    def sampled(seed: int) -> Rollout:
        torch.manual_seed(seed)  # as PPO and the evaluation seed their sampling
        return sample(policy, tokenizer, PROMPTS, 64, 10, 1.0, 0.95, engine="decode_loop")

    first = sampled(0)
    _assert_same(sampled(0), first)
    assert not torch.equal(sampled(1).input_ids, first.input_ids)


def _ends_turns_early(llama3_dir: Path) -> Any:
    """The Llama 3 style model, weights re-drawn so answers vary, its output row of
    ``<|eot_id|>`` made to win where one token would (only the output row: the template's own
    ``<|eot_id|>`` in the prompt keeps its embedding)."""
    tokenizer = load_tokenizer(llama3_dir)
    model = load_base_model(llama3_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        head = nn.Parameter(model.lm_head.weight.detach().clone())
        model.lm_head.weight = head
        model.config.tie_word_embeddings = False
        free = sample(model, tokenizer, PROMPTS, 64, 16, 1.0, 1.0, greedy=True, engine="generate")
        seen = [set(row[2:-2]) for row in free.input_ids[:, free.context_length :].tolist()]
        # A token some answers give midway and others never: those answers will end there.
        token = min(t for t in set().union(*seen) if any(t not in s for s in seen))
        head[tokenizer.convert_tokens_to_ids(EOT)] = head[token] * 1.05
    return model


def test_rollouts_stop_at_the_turns_end_not_the_tokenizers_eos(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    llama3_dir = write_llama3_style_model_dir(tmp_path_factory.mktemp("llama3-style"))
    tokenizer = load_tokenizer(llama3_dir)
    eot, end_of_text = tokenizer.convert_tokens_to_ids([EOT, END_OF_TEXT])
    assert tokenizer.eos_token_id == end_of_text != eot
    model = _ends_turns_early(llama3_dir)
    args = (model, tokenizer, PROMPTS, 64, 16, 1.0, 1.0)
    decoded = sample(*args, greedy=True, engine="decode_loop")
    _assert_same(decoded, sample(*args, greedy=True, engine="generate"))
    lengths = decoded.response_mask.sum(1).tolist()
    assert decoded.has_eos.any() and not decoded.has_eos.all()
    for row, length, ended in zip(decoded.input_ids, lengths, decoded.has_eos, strict=True):
        answer = row[decoded.context_length :][:length].tolist()
        assert (answer[-1] == eot) == bool(ended)
        assert eot not in answer[:-1]


def test_engine_names() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_engine_name("auto", cpu) == "decode_loop"
    assert resolve_engine_name("generate", cuda) == "generate"
    assert isinstance(make_engine("auto"), DecodeLoopEngine)
    assert isinstance(make_engine("generate"), GenerateEngine)
    with pytest.raises(ValueError, match="whole stage"):
        make_engine("vllm")
    with pytest.raises(ValueError, match="rollout_engine must be one of"):
        make_engine("beam")
    with pytest.raises(ValueError, match="rollout_engine must be one of"):
        PPOConfig(rollout_engine="beam")


def test_auto_takes_vllm_on_cuda_when_installed_and_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    cuda = torch.device("cuda")
    installed = {"vllm": True}
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name == "vllm":
            return object() if installed["vllm"] else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert resolve_engine_name("auto", cuda) == "vllm"
    assert resolve_engine_name("auto", cuda, processes=2) == "decode_loop"
    assert resolve_engine_name("auto", torch.device("cpu")) == "decode_loop"
    installed["vllm"] = False
    assert resolve_engine_name("auto", cuda) == "decode_loop"


def test_vllm_refuses_a_multi_process_stage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one training process"):
        open_rollout_engine("vllm", tmp_path, PPOConfig(), torch.device("cuda"), processes=2)


def test_folded_and_unfolded_decoding_give_the_same_rollout(
    policy: Any, lively_model_dir: Path
) -> None:
    from common.decoding.folded_lora import lora_layers

    weights = [id(m.get_base_layer().weight) for m in lora_layers(policy)]
    tokenizer = load_tokenizer(lively_model_dir)
    rows = [encode_prompt(tokenizer, p) for p in PROMPTS]
    request = RolloutRequest(max_new_tokens=10, temperature=0.0, top_p=1.0, stop_ids=(2,))
    folded = DecodeLoopEngine(fold=True).responses(policy, rows, request, pad_id=0)
    assert folded == DecodeLoopEngine(fold=False).responses(policy, rows, request, pad_id=0)
    assert [id(m.get_base_layer().weight) for m in lora_layers(policy)] == weights
