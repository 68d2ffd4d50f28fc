from __future__ import annotations

from pathlib import Path

import pytest

from common import embedded_model
from common.embedded_model import (
    gguf_path,
    is_model_dir,
    materialize_embedded_model,
    model_dir_sha256,
    resolve_model_dir,
)
from tests.support.chat_template import user_turn_batch


def test_gguf_file_ships_with_the_wheel():
    path = gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_resolve_accepts_any_local_model_dir(tiny_model_dir: Path):
    assert resolve_model_dir(str(tiny_model_dir)) == tiny_model_dir
    assert is_model_dir(tiny_model_dir)


def test_resolve_refuses_missing_or_non_model_dirs(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        resolve_model_dir(tmp_path)


def test_model_hash_depends_on_weights(tiny_model_dir: Path, tmp_path: Path):
    from devtools.tiny_model import write_tiny_model_dir

    other = write_tiny_model_dir(tmp_path / "other", seed=1)
    assert model_dir_sha256(tiny_model_dir) == model_dir_sha256(tiny_model_dir)
    assert model_dir_sha256(tiny_model_dir) != model_dir_sha256(other)


def test_materialise_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[Path] = []

    def fake_convert(source: Path, out_dir: Path) -> None:
        # Stand-in for the 30 s conversion: the caching/atomic-rename logic is under test here.
        calls.append(source)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"x")

    monkeypatch.setattr(embedded_model, "_convert_gguf", fake_convert)
    first = materialize_embedded_model(tmp_path)
    second = materialize_embedded_model(tmp_path)
    assert first == second and len(calls) == 1
    assert is_model_dir(first)
    materialize_embedded_model(tmp_path, force=True)
    assert len(calls) == 2
    assert not list(first.parent.glob(".tmp-*"))  # no staging left behind


def test_failed_conversion_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(source: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded_model, "_convert_gguf", broken)
    with pytest.raises(RuntimeError):
        materialize_embedded_model(tmp_path)
    assert not embedded_model.embedded_model_dir(tmp_path).exists()


@pytest.mark.slow
def test_converted_smollm2_answers_a_simple_question(embedded_model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    batch = user_turn_batch(tokenizer, "What is 2+2?")
    out = model.generate(**batch, max_new_tokens=30, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "4" in answer, answer
