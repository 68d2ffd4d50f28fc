"""Fixtures for the engine tests: random LoRA adapters on the tiny model whose greedy answers vary
(``lively_model_dir``, tests/conftest.py; the helpers that write them are in
tests/support/engines.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engines import write_lora_adapter


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
