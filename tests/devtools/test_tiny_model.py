from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from devtools.tiny_model import build_tiny_tokenizer
from tests.support.chat_template import user_turn_batch


def test_tiny_model_dir_loads_and_generates(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 50_000
    batch = user_turn_batch(tokenizer, "hi")
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert (
        out.shape[1] == batch["input_ids"].shape[1] + 5 or out[0, -1] == model.config.eos_token_id
    )
    logits = model(**batch).logits
    assert torch.isfinite(logits).all()


def test_tiny_tokenizer_round_trips_text_and_uses_chatml():
    tokenizer = build_tiny_tokenizer()
    text = "What is two plus two? 4!"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
