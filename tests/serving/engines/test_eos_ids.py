"""Both engines stop answers on ``common.end_of_turn``'s ids (plain functions: no vLLM start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.engines import transformers_engine, vllm_engine
from tests.support.llama3_style import END_OF_TEXT, EOT, write_llama3_style_model_dir


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama3_style_model_dir(tmp_path_factory.mktemp("llama3-style"))


def _load(model_dir: Path) -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def test_both_engines_stop_on_the_templates_end_of_turn(llama3_dir: Path) -> None:
    model, tokenizer = _load(llama3_dir)
    eot, end_of_text = tokenizer.convert_tokens_to_ids([EOT, END_OF_TEXT])  # type: ignore[attr-defined]
    assert model.generation_config.eos_token_id == end_of_text  # type: ignore[attr-defined]
    expected = {end_of_text, eot}
    assert transformers_engine._eos_ids(model, tokenizer) == expected
    assert vllm_engine._eos_ids(llama3_dir, tokenizer) == expected


def test_chatml_engines_stop_on_im_end_alone(tiny_model_dir: Path) -> None:
    model, tokenizer = _load(tiny_model_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")  # type: ignore[attr-defined]
    assert transformers_engine._eos_ids(model, tokenizer) == {im_end}
    assert vllm_engine._eos_ids(tiny_model_dir, tokenizer) == {im_end}
