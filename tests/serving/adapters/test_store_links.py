"""Links in the adapter store (unit tier): a version directory, weights file or manifest that is
a link out of the store is refused (422 ``adapter_rejected``, reason ``outside_store``) and never
reaches the engine; links that stay inside the store load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loop.faults.adapters import link_out_of_store, write_version
from serving.adapters import AdapterManager, AdapterRefused, store
from serving.engines.protocol import BASE, AdapterRejected
from serving.settings import ServingSettings
from tests.serving.adapters.admin_app import admin_app
from tests.serving.adapters.fakes import RecordingEngine, RecordingEvents

pytestmark = pytest.mark.anyio

WEIGHTS = "adapter_model.safetensors"


def _settings(
    tiny_model_dir: Path, tmp_path: Path, store_dir: Path, **extra: Any
) -> ServingSettings:
    values: dict[str, object] = {
        "model_dir": str(tiny_model_dir),
        "model_name": "tiny",
        "adapter_store": str(store_dir),
        "adapter_cache_dir": str(tmp_path / "cache"),
        "adapter_follow_topic": False,
        "adapter_unload_grace_seconds": 0.0,
    }
    return ServingSettings.model_validate({**values, **extra})


async def _manager(
    tiny_model_dir: Path, tmp_path: Path, store_dir: Path | None = None
) -> tuple[AdapterManager, RecordingEngine]:
    engine = RecordingEngine()
    settings = _settings(tiny_model_dir, tmp_path, store_dir or tmp_path / "store")
    manager = AdapterManager(settings, engine, RecordingEvents())
    await manager.start()
    return manager, engine


async def _assert_refused(manager: AdapterManager, engine: RecordingEngine, **body: Any) -> None:
    with pytest.raises(AdapterRefused) as exc:
        if "uri" in body:
            await manager.load(body["version"], body["uri"])
        else:
            await manager.promote(body["version"])
    assert exc.value.reason == "outside_store"
    assert isinstance(exc.value, AdapterRejected)  # the HTTP layer answers 422
    assert engine.calls == []  # never reached the engine
    assert manager.serving_version() == BASE


async def test_a_version_directory_linked_out_of_the_store_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    link = Path(write_version(tmp_path / "store", "policy", 1, tiny_model_dir).uri)
    link_out_of_store(link, tmp_path / "elsewhere")  # a valid version, checksums and all
    manager, engine = await _manager(tiny_model_dir, tmp_path)
    await _assert_refused(manager, engine, version="policy@v1")
    await _assert_refused(manager, engine, version="policy@v1", uri=str(link))
    assert manager.refusals == {"outside_store": 2}


async def test_a_family_directory_linked_out_of_the_store_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    write_version(tmp_path / "elsewhere", "policy", 1, tiny_model_dir)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "policy").symlink_to(tmp_path / "elsewhere" / "policy")
    manager, engine = await _manager(tiny_model_dir, tmp_path)
    await _assert_refused(manager, engine, version="policy@v1")


@pytest.mark.parametrize("name", [WEIGHTS, "manifest.json"])
async def test_a_weights_file_or_manifest_linked_out_of_the_store_is_refused(
    name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    built = write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    link_out_of_store(Path(built.uri) / name, tmp_path / "elsewhere")
    manager, engine = await _manager(tiny_model_dir, tmp_path)
    await _assert_refused(manager, engine, version="policy@v1")


async def test_a_dangling_link_out_of_the_store_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "store" / "policy").mkdir(parents=True)
    (tmp_path / "store" / "policy" / "v1").symlink_to(tmp_path / "nowhere")
    manager, engine = await _manager(tiny_model_dir, tmp_path)
    await _assert_refused(manager, engine, version="policy@v1")


async def test_links_that_stay_inside_the_store_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A store mounted through a link, a version directory and a weights file that are links
    to elsewhere in the family: allowed, and the engine gets the resolved directory."""
    real_store = tmp_path / "real-store"
    built = write_version(real_store, "policy", 1, tiny_model_dir)
    family = real_store / "policy"
    real_dir = family / "blobs-v1"
    Path(built.uri).rename(real_dir)
    (family / "v1").symlink_to("blobs-v1", target_is_directory=True)
    link_out_of_store(real_dir / WEIGHTS, family / "shared")  # "out" of v1, still in the store
    (tmp_path / "store").symlink_to(real_store, target_is_directory=True)

    manager, engine = await _manager(tiny_model_dir, tmp_path)
    await manager.promote("policy@v1")
    assert manager.serving_version() == "policy@v1"
    assert engine.adapters["policy@v1"] == real_dir.resolve()
    assert manager.refusals == {}


async def test_a_file_swapped_for_a_link_after_the_check_is_not_followed(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolved path is what gets opened: a link put in its place after resolution (here:
    resolution that cannot see it) makes the open fail instead of reading where it leads."""
    built = write_version(tmp_path / "store", "policy", 1, tiny_model_dir)
    link_out_of_store(Path(built.uri) / WEIGHTS, tmp_path / "elsewhere")
    monkeypatch.setattr(store, "_realpath", lambda path: Path(path).absolute())
    manager, engine = await _manager(tiny_model_dir, tmp_path)
    await _assert_refused(manager, engine, version="policy@v1")


async def test_admin_api_answers_422_for_a_version_linked_out_of_the_store(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    outside = write_version(tmp_path / "elsewhere", "policy", 1, tiny_model_dir)
    (tmp_path / "store" / "policy").mkdir(parents=True)
    link = tmp_path / "store" / "policy" / "v1"
    link.symlink_to(outside.uri, target_is_directory=True)
    store_dir, cache = tmp_path / "store", tmp_path / "cache"
    async with admin_app(tiny_model_dir, store_dir, cache, model_name="tiny") as app:
        http, manager = app.http, app.manager
        for path, body in (
            ("/admin/adapters/promote", {"version": "policy@v1"}),
            ("/admin/adapters/load", {"version": "policy@v1", "uri": str(link)}),
        ):
            r = await http.post(path, json=body)
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "adapter_rejected"
            assert "outside_store" in r.text
        assert manager.serving_version() == BASE
