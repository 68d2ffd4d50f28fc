"""Adapter manager (unit tier): verification refusals, promote/rollback, eviction, remote store,
and requests running concurrently with swaps."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from loop.faults.adapters import write_version
from schemas.events import AdapterPromoted, AdapterRolledBack, ChatMessage
from serving.adapters import (
    AdapterManager,
    AdapterNotFound,
    AdapterRefused,
    AdapterStateError,
)
from serving.engines.protocol import BASE, AdapterRejected, GenerationRequest
from serving.settings import ServingSettings
from tests.serving.adapters.fakes import RecordingEngine, RecordingEvents

pytestmark = pytest.mark.anyio


def _settings(
    tiny_model_dir: Path, tmp_path: Path, store: str | None = None, **extra: Any
) -> ServingSettings:
    values: dict[str, object] = {
        "model_dir": str(tiny_model_dir),
        "model_name": "tiny",
        "adapter_store": store or str(tmp_path / "store"),
        "adapter_cache_dir": str(tmp_path / "cache"),
        "adapter_follow_topic": False,
        "adapter_unload_grace_seconds": 0.0,
    }
    return ServingSettings.model_validate({**values, **extra})


async def _manager(
    tiny_model_dir: Path, tmp_path: Path, engine: RecordingEngine | None = None, **extra: Any
) -> tuple[AdapterManager, RecordingEngine, RecordingEvents]:
    engine = engine or RecordingEngine()
    events = RecordingEvents()
    manager = AdapterManager(_settings(tiny_model_dir, tmp_path, **extra), engine, events)
    await manager.start()
    return manager, engine, events


async def test_starts_on_base_and_is_ready(tiny_model_dir: Path, tmp_path: Path) -> None:
    manager, _, _ = await _manager(tiny_model_dir, tmp_path)
    assert manager.ready()
    assert manager.serving_version() == BASE
    assert [a.version for a in manager.list()] == [BASE]


async def test_load_promote_rollback_flip(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    v1 = write_version(store, "policy", 1, tiny_model_dir)
    write_version(store, "policy", 2, tiny_model_dir)
    manager, engine, events = await _manager(tiny_model_dir, tmp_path)

    info = await manager.load("policy@v1", v1.uri)
    assert info.state == "loaded" and info.manifest is not None
    assert manager.serving_version() == BASE  # loading alone does not flip the alias
    await manager.promote("policy@v1")
    assert manager.serving_version() == "policy@v1"
    await manager.promote("policy@v2")  # found in the store layout, loaded, then promoted
    assert manager.serving_version() == "policy@v2"
    assert engine.calls[-3:] == [("load", "policy@v2"), ("smoke", "policy@v2")] or engine.calls[
        -2:
    ] == [("load", "policy@v2"), ("smoke", "policy@v2")]
    states = {a.version: a.state for a in manager.list()}
    assert states == {BASE: "loaded", "policy@v1": "previous", "policy@v2": "serving"}

    assert await manager.rollback() == "policy@v1"
    assert manager.serving_version() == "policy@v1"
    assert "policy@v2" in engine.loaded_adapters()  # nothing unloaded by a rollback
    assert await manager.rollback() == BASE
    with pytest.raises(AdapterStateError) as exc:
        await manager.rollback()
    assert isinstance(exc.value, ValueError)  # the HTTP layer answers 400

    kinds = [
        (type(e).__name__, getattr(e, "version", getattr(e, "to_version", None)))
        for e in events.events
    ]
    assert kinds == [
        ("AdapterPromoted", "policy@v1"),
        ("AdapterPromoted", "policy@v2"),
        ("AdapterRolledBack", "policy@v1"),
        ("AdapterRolledBack", BASE),
    ]
    promoted = events.events[1]
    assert isinstance(promoted, AdapterPromoted) and promoted.previous_version == "policy@v1"
    rolled = events.events[2]
    assert isinstance(rolled, AdapterRolledBack) and rolled.from_version == "policy@v2"
    assert all(e.key() == "tiny" for e in events.events)


async def test_corrupt_file_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    built = write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    weights = Path(built.uri) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    manager, engine, events = await _manager(tiny_model_dir, tmp_path)

    with pytest.raises(AdapterRefused) as exc:
        await manager.promote("policy@v1")
    assert exc.value.reason == "file_checksum"
    assert isinstance(exc.value, AdapterRejected)  # the HTTP layer answers 422
    assert "adapter_model.safetensors" in str(exc.value)
    assert engine.calls == []  # never reached the engine
    assert manager.serving_version() == BASE
    assert manager.refusals == {"file_checksum": 1}
    assert events.events == []


@pytest.mark.parametrize(
    ("removed", "reason"),
    [("adapter_config.json", "file_missing"), ("manifest.json", "manifest_missing")],
)
async def test_a_version_missing_a_file_is_refused(
    tiny_model_dir: Path, tmp_path: Path, removed: str, reason: str
) -> None:
    built = write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    (Path(built.uri) / removed).unlink()
    manager, engine, _ = await _manager(tiny_model_dir, tmp_path)
    with pytest.raises(AdapterRefused) as exc:
        await manager.load("policy@v1")
    assert exc.value.reason == reason
    assert engine.calls == []


async def test_unknown_version_and_wrong_family(tiny_model_dir: Path, tmp_path: Path) -> None:
    write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    manager, _, _ = await _manager(tiny_model_dir, tmp_path)
    with pytest.raises(AdapterNotFound):
        await manager.promote("policy@v9")
    with pytest.raises(AdapterStateError) as wrong:
        await manager.load("other@v1")
    assert wrong.value.reason == "wrong_family"


async def test_wrong_base_model_hash_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    write_version(tmp_path / "store", "policy", 1, tiny_model_dir, base_model_sha256="0" * 64)
    manager, engine, _ = await _manager(tiny_model_dir, tmp_path)
    with pytest.raises(AdapterRefused) as exc:
        await manager.promote("policy@v1")
    assert exc.value.reason == "base_model_mismatch"
    assert engine.calls == []
    assert manager.serving_version() == BASE


async def test_manifest_hash_must_match_the_published_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    built = write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    manifest = Path(built.uri) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["metrics"] = {"reward": 99.0}  # edited after publishing: files still match
    manifest.write_text(json.dumps(data))
    manager, _, _ = await _manager(tiny_model_dir, tmp_path)
    with pytest.raises(AdapterRefused) as exc:
        await manager._ensure_loaded("policy@v1", built.uri, built.manifest_sha256)
    assert exc.value.reason == "manifest_checksum"


async def test_failed_smoke_check_is_refused_and_unloaded(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    engine = RecordingEngine()
    engine.fail_smoke.add("policy@v1")
    manager, _, _ = await _manager(tiny_model_dir, tmp_path, engine)
    with pytest.raises(AdapterRefused) as exc:
        await manager.promote("policy@v1")
    assert exc.value.reason == "smoke_check_failed"
    assert engine.loaded_adapters() == []
    assert manager.serving_version() == BASE


async def test_remote_store_is_copied_to_local_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = f"memory://store-{random.getrandbits(32)}"
    built = write_version(store, "policy", 3, tiny_model_dir)
    manager, engine, _ = await _manager(tiny_model_dir, tmp_path, store=store)
    await manager.promote("policy@v3")
    path = engine.adapters["policy@v3"]
    assert path.is_relative_to(tmp_path / "cache")
    assert (path / "adapter_model.safetensors").is_file()
    assert manager.list()[-1].uri == f"{store}/policy/v3"  # the store layout, as published
    assert built.uri.endswith(store.split("://")[1] + "/policy/v3")


async def test_old_versions_unloaded_beyond_keep_count(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    for n in range(1, 6):
        write_version(tmp_path / "store", "policy", n, tiny_model_dir)
    manager, engine, _ = await _manager(tiny_model_dir, tmp_path, adapter_keep_loaded=3)
    for n in range(1, 6):
        await manager.promote(f"policy@v{n}")
    await asyncio.sleep(0.05)  # grace 0: the delayed unloads run now
    assert sorted(engine.loaded_adapters()) == ["policy@v3", "policy@v4", "policy@v5"]
    assert ("unload", "policy@v1") in engine.calls and ("unload", "policy@v2") in engine.calls
    # Rollback goes to the previous *loaded* version, instantly.
    assert await manager.rollback() == "policy@v4"
    with pytest.raises(AdapterNotFound):
        manager.set_canary("policy@v1")
    manager.set_canary("policy@v5")
    assert manager.canary_version() == "policy@v5"


async def test_requests_during_swaps_never_fail(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each request reads the alias once (as the HTTP layer does) and must be answered by
    exactly that version, while versions are promoted, rolled back and evicted."""
    for n in range(1, 5):
        write_version(tmp_path / "store", "policy", n, tiny_model_dir)
    engine = RecordingEngine(generate_seconds=0.02)
    manager, _, _ = await _manager(
        tiny_model_dir, tmp_path, engine, adapter_keep_loaded=2, adapter_unload_grace_seconds=0.5
    )
    results: list[tuple[str, str]] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            version = manager.serving_version()
            await asyncio.sleep(random.uniform(0, 0.15))  # parsing, pairing, queueing...
            out = await engine.generate(
                GenerationRequest(
                    messages=[ChatMessage(role="user", content="hi")], max_tokens=4, adapter=version
                )
            )
            results.append((version, out[0].adapter))

    async def operator() -> None:
        for action in [
            "policy@v1",
            "policy@v2",
            "rollback",
            "policy@v3",
            "policy@v4",
            "rollback",
            "policy@v2",
        ]:
            await asyncio.sleep(0.05)
            if action == "rollback":
                await manager.rollback()
            else:
                await manager.promote(action)
        await asyncio.sleep(0.6)  # past the grace period: evictions happen
        stop.set()

    clients = [asyncio.create_task(client()) for _ in range(16)]
    await operator()
    await asyncio.gather(*clients)  # any failed request raises here

    assert len(results) > 100
    assert all(asked == used for asked, used in results)
    used = {u for _, u in results}
    assert {"policy@v1", "policy@v2", "policy@v3", "policy@v4"} <= used
    assert manager.serving_version() == "policy@v2"
    assert ("unload", "policy@v1") in engine.calls  # evictions did happen meanwhile


async def test_unreachable_store_is_a_clear_refusal(tiny_model_dir: Path, tmp_path: Path) -> None:
    manager, engine, _ = await _manager(tiny_model_dir, tmp_path)
    with pytest.raises(AdapterRefused) as exc:
        await manager.load("policy@v1", "nosuchprotocol://bucket/policy/v1")
    assert exc.value.reason == "fetch_failed"
    assert manager.refusals == {"fetch_failed": 1}
    assert engine.calls == []


async def test_a_uri_outside_the_store_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    outside = write_version(tmp_path / "elsewhere", "policy", 1, tiny_model_dir)
    manager, engine, _ = await _manager(tiny_model_dir, tmp_path)
    for uri in (outside.uri, f"{tmp_path / 'store'}/policy/../../elsewhere/policy/v1"):
        with pytest.raises(AdapterRefused) as exc:
            await manager.load("policy@v1", uri)
        assert exc.value.reason == "outside_store"
    assert engine.calls == [] and manager.serving_version() == BASE


async def test_rollback_is_instant_while_another_version_loads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import time

    class SlowLoads(RecordingEngine):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def smoke_check(self, version: str) -> None:
            if version == "policy@v3":
                await self.gate.wait()  # a smoke check stuck behind heavy traffic
            await super().smoke_check(version)

    for n in (1, 2, 3):
        write_version(tmp_path / "store", "policy", n, tiny_model_dir, model_name="tiny")
    engine = SlowLoads()
    manager, _, _ = await _manager(tiny_model_dir, tmp_path, engine=engine)
    try:
        await manager.promote("policy@v1")
        await manager.promote("policy@v2")
        loading = asyncio.create_task(manager.load("policy@v3"))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        # Before the state lock was split from the load lock, these waited for the load.
        assert await asyncio.wait_for(manager.rollback(), 2.0) == "policy@v1"
        await asyncio.wait_for(manager.promote("policy@v2"), 2.0)  # loaded: a flip
        assert time.perf_counter() - started < 0.5
        assert not loading.done()
        engine.gate.set()
        await loading
        assert "policy@v3" in engine.loaded_adapters()
    finally:
        await manager.stop()


async def test_each_load_stage_is_timed(tiny_model_dir: Path, tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def counts() -> list[float]:
        return [
            REGISTRY.get_sample_value(
                "rlhf_serving_adapter_load_stage_seconds_count", {"stage": stage}
            )
            or 0.0
            for stage in ("fetch", "engine_load", "smoke_check")
        ]

    v1 = write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    manager, _, _ = await _manager(tiny_model_dir, tmp_path)
    before = counts()
    await manager.load("policy@v1", v1.uri)
    assert [after - was for after, was in zip(counts(), before, strict=True)] == [1, 1, 1]
