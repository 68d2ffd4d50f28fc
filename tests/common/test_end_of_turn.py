"""The end-of-turn ids serving and the learner share (``common.end_of_turn``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.end_of_turn import chat_template_end_of_turn_id, end_of_turn_id, end_of_turn_ids
from devtools.tiny_model import build_tiny_tokenizer
from tests.support.llama3_style import END_OF_TEXT, EOT, build_llama3_style_tokenizer


@pytest.fixture(scope="module")
def llama3() -> object:
    return build_llama3_style_tokenizer()


def test_a_turn_that_ends_unlike_eos_adds_the_templates_token(llama3: object) -> None:
    eot, end_of_text = llama3.convert_tokens_to_ids([EOT, END_OF_TEXT])  # type: ignore[attr-defined]
    assert llama3.eos_token_id == end_of_text  # type: ignore[attr-defined]
    assert chat_template_end_of_turn_id(llama3) == eot
    assert end_of_turn_ids(llama3) == [end_of_text, eot]
    assert end_of_turn_id(llama3) == eot  # what a served answer ends with, not the EOS


def test_chatml_keeps_its_one_id() -> None:
    tokenizer = build_tiny_tokenizer()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_ids(tokenizer) == [im_end]
    assert end_of_turn_ids(tokenizer, SimpleNamespace(eos_token_id=im_end)) == [im_end]
    assert end_of_turn_id(tokenizer) == im_end == tokenizer.eos_token_id


def test_generation_config_ids_come_first_from_an_object_or_a_directory(
    llama3: object, tmp_path: Path
) -> None:
    eot, end_of_text = llama3.convert_tokens_to_ids([EOT, END_OF_TEXT])  # type: ignore[attr-defined]
    listed = SimpleNamespace(eos_token_id=[end_of_text, 7, eot])
    assert end_of_turn_ids(llama3, listed) == [end_of_text, 7, eot]
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 9}))
    assert end_of_turn_ids(llama3, tmp_path) == [9, end_of_text, eot]  # derived from config
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [8, eot]}))
    assert end_of_turn_ids(llama3, str(tmp_path)) == [8, eot, end_of_text]
    assert end_of_turn_ids(llama3, tmp_path / "missing") == [end_of_text, eot]


def test_no_template_or_one_that_cannot_render_falls_back_to_eos() -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None
    assert end_of_turn_ids(tokenizer) == [tokenizer.eos_token_id]
    tokenizer.chat_template = "{{ raise_exception('system turn required') }}"
    assert end_of_turn_id(tokenizer) == tokenizer.eos_token_id


def test_a_template_ending_turns_with_plain_text_has_no_end_of_turn_token() -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    )
    assert chat_template_end_of_turn_id(tokenizer) is None
    assert end_of_turn_ids(tokenizer) == [tokenizer.eos_token_id]
