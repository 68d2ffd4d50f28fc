"""A tiny tokenizer and model directory whose turns end unlike their EOS, as in Llama 3.

Llama 3 Instruct ends each turn with ``<|eot_id|>`` while its tokenizer's ``eos_token`` is
``<|end_of_text|>``, and early releases listed only ``<|end_of_text|>`` in the generation config
(https://www.llama.com/docs/model-cards-and-prompt-formats/llama3_1/). The ChatML tiny model
(``devtools.tiny_model``) cannot show the difference: its ``<|im_end|>`` is both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.tiny_model import build_tiny_model

EOT = "<|eot_id|>"
END_OF_TEXT = "<|end_of_text|>"

# Llama 3's template without its ``| trim`` (``common.chat_encoding`` wants content verbatim).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is two plus two? Two plus two is four.",
    "Hello! How can I help you today?",
]


def build_llama3_style_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", END_OF_TEXT, "<|start_header_id|>", "<|end_header_id|>", EOT]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS, trainer=trainer)
    # No pad token, as Llama 3 (the learner pads with EOS).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token=END_OF_TEXT
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def write_llama3_style_model_dir(path: Path) -> Path:
    """A tiny model directory whose config and generation config name only ``<|end_of_text|>``."""
    tokenizer = build_llama3_style_tokenizer()
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    model = build_tiny_model(
        vocab_size=len(tokenizer), eos_token_id=end_of_text, pad_token_id=end_of_text
    )
    model.generation_config.eos_token_id = end_of_text
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
