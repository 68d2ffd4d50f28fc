"""Adapter manager on the real TransformersEngine with the tiny random model (unit tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.adapters import AdapterManager, AdapterRefused
from serving.engines.protocol import BASE
from serving.engines.transformers_engine import TransformersEngine
from serving.settings import ServingSettings
from tests.support.adapters import write_version

pytestmark = pytest.mark.anyio


async def test_nan_adapter_refused_by_smoke_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_version(store, "policy", 1, tiny_model_dir, nan=True)  # files and hashes are valid
    settings = ServingSettings(
        model_dir=str(tiny_model_dir),
        model_name="tiny",
        adapter_store=str(store),
        adapter_cache_dir=str(tmp_path / "cache"),
        adapter_follow_topic=False,
    )
    engine = TransformersEngine(tiny_model_dir, max_batch_size=4)
    await engine.start()
    manager = AdapterManager(settings, engine, None)
    try:
        await manager.start()
        with pytest.raises(AdapterRefused) as exc:
            await manager.promote("policy@v1")
        assert exc.value.reason == "smoke_check_failed"
        assert "non-finite" in str(exc.value)
        assert manager.serving_version() == BASE
        assert engine.loaded_adapters() == []  # unloaded again after the failed check
        assert manager.refusals == {"smoke_check_failed": 1}
    finally:
        await manager.stop()
        await engine.stop()


@pytest.mark.slow
async def test_swap_on_embedded_model(embedded_model_dir: Path, tmp_path: Path) -> None:
    """A small random adapter on SmolLM2 passes the real smoke check and is swapped in; the
    previous version stays loaded and rollback is instant."""
    store = tmp_path / "store"
    for n in (1, 2):
        write_version(store, "policy", n, embedded_model_dir, model_name="smol", std=0.02)
    settings = ServingSettings(
        model_dir=str(embedded_model_dir),
        model_name="smol",
        adapter_store=str(store),
        adapter_cache_dir=str(tmp_path / "cache"),
        adapter_follow_topic=False,
    )
    engine = TransformersEngine(embedded_model_dir, max_batch_size=4)
    await engine.start()
    manager = AdapterManager(settings, engine, None)
    try:
        await manager.start()
        await manager.promote("policy@v1")
        await manager.promote("policy@v2")
        assert manager.serving_version() == "policy@v2"
        assert sorted(engine.loaded_adapters()) == ["policy@v1", "policy@v2"]
        assert await manager.rollback() == "policy@v1"
    finally:
        await manager.stop()
        await engine.stop()
