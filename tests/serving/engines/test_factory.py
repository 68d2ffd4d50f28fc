"""create_engine picks the engine named by the settings, without loading a model."""

from __future__ import annotations

from pathlib import Path

from serving.engines import create_engine
from serving.engines.protocol import Engine
from serving.engines.transformers_engine import TransformersEngine
from serving.settings import ServingSettings


def test_transformers_from_settings(tiny_model_dir: Path) -> None:
    settings = ServingSettings(
        engine="transformers", model_dir=str(tiny_model_dir), max_batch_size=8
    )
    engine = create_engine(settings)
    assert isinstance(engine, TransformersEngine)
    assert isinstance(engine, Engine)
    assert engine.model_dir == tiny_model_dir
    assert engine.max_batch_size == 8


def test_fake_from_settings(tiny_model_dir: Path) -> None:
    engine = create_engine(ServingSettings(engine="fake", model_dir=str(tiny_model_dir)))
    assert engine.name == "fake"
    assert isinstance(engine, Engine)
