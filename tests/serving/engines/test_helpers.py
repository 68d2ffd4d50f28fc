"""Unit tests of the engine's pure helpers: detokenisation, degenerate answers, adapter checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from serving.engines.detokenize import StreamDecoder
from serving.engines.model_engine import degenerate, non_finite_weights
from serving.engines.protocol import AdapterRejected


def test_stream_decoder_matches_full_decode(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(3, len(tok)) for _ in range(30)]
        decoder = StreamDecoder(tok, stop=[])
        text = "".join(decoder.push(i) for i in ids) + decoder.finish()
        assert text == tok.decode(ids, skip_special_tokens=True)


def test_stream_decoder_holds_back_a_possible_stop(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("Hello! How can I help you today?", add_special_tokens=False)["input_ids"]
    decoder = StreamDecoder(tok, stop=["help you"])
    pieces = []
    for token in ids:
        pieces.append(decoder.push(token))
        assert "help" not in "".join(pieces)  # never emitted before the match is decided
        if decoder.stopped:
            break
    assert decoder.stopped
    assert "".join(pieces) == "Hello! How can I "


class CharTokenizer:
    """One token per character: stop matching can be checked against plain string operations."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(map(chr, ids))


def _stream(text: str, stop: list[str]) -> tuple[list[str], StreamDecoder]:
    decoder = StreamDecoder(CharTokenizer(), stop)
    pieces = []
    for ch in text:
        pieces.append(decoder.push(ord(ch)))
        if decoder.stopped:
            break
    pieces.append(decoder.finish())
    return pieces, decoder


def _first_completed_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Reference: generation ends when a stop string first completes, and is cut where it began."""
    for end in range(len(text) + 1):
        cuts = [i for s in stop if (i := text[:end].find(s)) >= 0]
        if cuts:
            return text[: min(cuts)], True
    return text, False


def test_stream_decoder_cuts_at_the_earliest_stop_and_never_emits_past_it() -> None:
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice("abc") for _ in range(rng.randrange(0, 40)))
        stop = ["".join(rng.choice("abc") for _ in range(rng.randrange(1, 6))) for _ in range(4)]
        expected, stopped = _first_completed_stop(text, stop)
        pieces, decoder = _stream(text, stop)
        assert "".join(pieces) == expected, (text, stop)
        assert decoder.stopped == stopped


def test_stream_decoder_holds_back_only_a_possible_start_of_a_stop() -> None:
    decoder = StreamDecoder(CharTokenizer(), ["abcd", "xy"])
    out = "".join(decoder.push(ord(c)) for c in "zzab")
    assert out == "zz"  # "ab" may still become "abcd"
    out += "".join(decoder.push(ord(c)) for c in "ce")
    assert out == "zzabce"  # "abce" cannot: released
    out += decoder.push(ord("x"))
    assert out == "zzabce" and decoder.finish() == "x"  # the answer ended: nothing is a stop


def test_degenerate() -> None:
    assert degenerate("   ") == "empty answer"
    assert degenerate("!!!!!!!!!!") == "one character repeated"
    assert degenerate("the the the the the the") == "one word repeated"
    assert degenerate("Two plus two is four.") is None


def test_non_finite_weights_names_the_broken_tensors(
    adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    assert non_finite_weights(adapter_dirs["a@v1"]) == []
    broken = non_finite_weights(adapter_dirs["nan@v1"])
    assert broken and all("lora_B" in name for name in broken)
    # Older PEFT's pickled weights are read the same way.
    tensors = load_file(str(adapter_dirs["nan@v1"] / "adapter_model.safetensors"))
    torch.save(tensors, tmp_path / "adapter_model.bin")
    assert non_finite_weights(tmp_path) == broken
    with pytest.raises(AdapterRejected, match="no adapter_model"):
        non_finite_weights(tmp_path / "missing")
