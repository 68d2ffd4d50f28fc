"""The GPU check's random-weight model: a published layout with the embedded tokenizer's ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import random_model
from devtools.tiny_model import build_tiny_tokenizer, write_tiny_model_dir


def test_resized_config_takes_the_tokenizers_vocabulary_and_ids() -> None:
    tokenizer = build_tiny_tokenizer()
    config: dict[str, object] = {"vocab_size": 151936, "eos_token_id": 151645, "hidden_size": 8}
    resized = random_model.resized_config(config, tokenizer)
    assert resized["vocab_size"] == len(tokenizer)
    assert resized["eos_token_id"] == tokenizer.eos_token_id
    assert resized["pad_token_id"] == tokenizer.pad_token_id
    assert resized["hidden_size"] == 8


def test_build_writes_a_loadable_model_in_the_asked_dtype(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = write_tiny_model_dir(tmp_path / "tiny")
    layout = tmp_path / "configs" / "small-qwen"
    layout.mkdir(parents=True)
    small = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    }
    (layout / "config.json").write_text(json.dumps(small))
    monkeypatch.setattr(random_model, "CONFIGS", tmp_path / "configs")
    out = tmp_path / "out"
    count = random_model.build("small-qwen", out, "bfloat16", 0, tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert model.config.model_type == "qwen2"
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.bfloat16"
    assert model.config.vocab_size == len(tokenizer)
    assert count == sum(p.numel() for p in model.parameters())
