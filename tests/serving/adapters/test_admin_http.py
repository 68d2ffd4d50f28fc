"""The real AdapterManager behind the HTTP admin routes (fake engine, no broker): the HTTP
layer's error mapping and the chat path see the versions the manager serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.faults.adapters import write_version
from tests.serving.adapters.admin_app import admin_app

pytestmark = pytest.mark.anyio


async def test_admin_routes_drive_the_manager(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    v1 = write_version(store, "policy", 1, tiny_model_dir)
    write_version(store, "policy", 2, tiny_model_dir, base_model_sha256="0" * 64)
    async with admin_app(tiny_model_dir, store, tmp_path / "cache") as app:
        http, settings, events = app.http, app.settings, app.events
        r = await http.post("/admin/adapters/load", json={"version": "policy@v1", "uri": v1.uri})
        assert r.status_code == 200, r.text
        r = await http.post("/admin/adapters/promote", json={"version": "policy@v1"})
        assert r.status_code == 200 and r.json()["serving_version"] == "policy@v1"

        chat = await http.post(
            "/v1/chat/completions",
            json={
                "model": settings.model_name,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["adapter_version"] == "policy@v1"

        r = await http.post("/admin/adapters/promote", json={"version": "policy@v2"})
        assert r.status_code == 422 and "base_model_mismatch" in r.text
        r = await http.post("/admin/adapters/promote", json={"version": "policy@v7"})
        assert r.status_code == 404
        r = await http.post("/admin/adapters/load", json={"version": "other@v1"})
        assert r.status_code == 409

        r = await http.post("/admin/adapters/rollback")
        assert r.status_code == 200 and r.json()["serving_version"] == "base"
        r = await http.post("/admin/adapters/rollback")
        assert r.status_code == 409
        listed = (await http.get("/admin/adapters")).json()["adapters"]
        assert {a["version"]: a["state"] for a in listed} == {
            "base": "serving",
            "policy@v1": "loaded",
        }
    assert [
        e.model_dump()["kind"] for e in events.events if "adapter" in e.model_dump()["kind"]
    ] == ["adapter.promoted", "adapter.rolled_back"]
