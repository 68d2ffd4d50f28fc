"""Fixtures for the engine tests: a tiny model whose greedy answers vary, random LoRA adapters
(the helpers that write them are in tests/support/engines.py).

The shared tiny model (``tiny_model_dir``) has near-zero random weights, so its greedy answer is
one token repeated: useless for telling batches or adapters apart. ``lively_model_dir`` re-draws
its weights with a larger spread (same architecture and tokenizer) so different prompts and
adapters give visibly different answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engines import write_lively_model, write_lora_adapter


@pytest.fixture(scope="session")
def lively_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lively_model(tiny_model_dir, tmp_path_factory.mktemp("lively-model"))


@pytest.fixture(scope="session")
def adapter_dirs(
    lively_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a@v1": write_lora_adapter(lively_model_dir, root / "a1", seed=1),
        "b@v1": write_lora_adapter(lively_model_dir, root / "b1", seed=2),
        "nan@v1": write_lora_adapter(lively_model_dir, root / "nan1", seed=3, nan=True),
    }
