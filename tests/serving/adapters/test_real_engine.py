"""Adapter manager on the real TransformersEngine with the tiny random model (unit tier)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from loop.faults.adapters import write_version
from serving.adapters import AdapterManager, AdapterRefused
from serving.engines.protocol import BASE
from serving.engines.transformers_engine import TransformersEngine
from serving.settings import ServingSettings

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def manager_on_real_engine(
    model_dir: Path, model_name: str, tmp_path: Path
) -> AsyncIterator[tuple[AdapterManager, TransformersEngine]]:
    """A started manager on a started engine, over the store at ``tmp_path/store``."""
    settings = ServingSettings(
        model_dir=str(model_dir),
        model_name=model_name,
        adapter_store=str(tmp_path / "store"),
        adapter_cache_dir=str(tmp_path / "cache"),
        adapter_follow_topic=False,
    )
    engine = TransformersEngine(model_dir, max_batch_size=4)
    await engine.start()
    manager = AdapterManager(settings, engine, None)
    try:
        await manager.start()
        yield manager, engine
    finally:
        await manager.stop()
        await engine.stop()


async def test_nan_adapter_refused_by_smoke_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_version(store, "policy", 1, tiny_model_dir, nan=True)  # files and hashes are valid
    async with manager_on_real_engine(tiny_model_dir, "tiny", tmp_path) as (manager, engine):
        with pytest.raises(AdapterRefused) as exc:
            await manager.promote("policy@v1")
        assert exc.value.reason == "smoke_check_failed"
        assert "non-finite" in str(exc.value)
        assert manager.serving_version() == BASE
        assert engine.loaded_adapters() == []  # unloaded again after the failed check
        assert manager.refusals == {"smoke_check_failed": 1}


@pytest.mark.slow
async def test_swap_on_embedded_model(embedded_model_dir: Path, tmp_path: Path) -> None:
    """A small random adapter on SmolLM2 passes the real smoke check and is swapped in; the
    previous version stays loaded and rollback is instant."""
    store = tmp_path / "store"
    for n in (1, 2):
        write_version(store, "policy", n, embedded_model_dir, model_name="smol", std=0.02)
    async with manager_on_real_engine(embedded_model_dir, "smol", tmp_path) as (manager, engine):
        await manager.promote("policy@v1")
        await manager.promote("policy@v2")
        assert manager.serving_version() == "policy@v2"
        assert sorted(engine.loaded_adapters()) == ["policy@v1", "policy@v2"]
        assert await manager.rollback() == "policy@v1"
