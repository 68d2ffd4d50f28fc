"""SFT on the tiny model: completion-only labels, loss falls, adapter loads with plain PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from learner.modeling import load_base_model, load_tokenizer
from learner.sft.data import load_jsonl
from learner.sft.train import IGNORE, SFTResult, _encode, completion_loss
from tests.learner.ml.helpers import sft_examples


def _data_loss(model: torch.nn.Module, tiny_model_dir: Path) -> float:
    tokenizer = load_tokenizer(tiny_model_dir)
    losses = []
    for row in _encode(tokenizer, sft_examples(), 512):
        ids = torch.tensor([row["ids"]])
        with torch.no_grad():
            losses.append(
                completion_loss(model(input_ids=ids).logits, torch.tensor([row["labels"]])).item()
            )
    return sum(losses) / len(losses)


def test_labels_cover_only_the_completion(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    row = _encode(tokenizer, sft_examples()[:1], 512)[0]
    targets = [t for t in row["labels"] if t != IGNORE]
    completion = tokenizer("Two plus two is four.", add_special_tokens=False)["input_ids"]
    assert targets == [*completion, tokenizer.eos_token_id]
    assert row["ids"][-len(targets) :] == targets


def test_sft_lowers_loss_and_adapter_loads_with_peft(
    tiny_model_dir: Path, sft_result: SFTResult
) -> None:
    from peft import PeftModel

    assert sft_result.metrics["loss/last_epoch"] < sft_result.metrics["loss/first_epoch"]
    base_loss = _data_loss(load_base_model(tiny_model_dir), tiny_model_dir)
    tuned = PeftModel.from_pretrained(load_base_model(tiny_model_dir), str(sft_result.adapter_dir))
    assert _data_loss(tuned, tiny_model_dir) < base_loss - 0.1
    assert (sft_result.adapter_dir / "adapter_config.json").is_file()


def test_load_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "demos.jsonl"
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }
    path.write_text(json.dumps(chat) + "\n\n" + json.dumps(chat) + "\n")
    examples = load_jsonl(path)
    assert len(examples) == 2
    assert examples[0].completion == "4"
    assert [m.role for m in examples[0].prompt] == ["system", "user"]
    path.write_text(json.dumps({"messages": chat["messages"][:2]}) + "\n")
    with pytest.raises(ValueError, match=":1: needs a prompt and a final assistant"):
        load_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_jsonl(path)
