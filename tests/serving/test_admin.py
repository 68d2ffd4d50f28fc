"""/admin/adapters: admin token required; thin delegation to the adapter manager."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.serving import ADMIN, API_KEY, Harness, auth, harness, make_settings

pytestmark = pytest.mark.anyio


async def _adapters(h: Harness, action: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """POST /admin/adapters/<action> with the admin token."""
    return await h.http.post(f"/admin/adapters/{action}", headers=auth(ADMIN), json=body)


async def test_admin_needs_the_admin_token() -> None:
    async with harness() as h:
        for headers in ({}, auth(API_KEY), auth("nope")):
            r = await h.http.get("/admin/adapters", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_admin_token"
        r = await h.http.post(
            "/admin/adapters/promote", json={"version": "x"}, headers=auth(API_KEY)
        )
        assert r.status_code == 401 and not h.adapters.calls


async def test_load_promote_canary_rollback(tmp_path) -> None:
    async with harness() as h:
        r = await _adapters(h, "load", {"version": "policy@v1", "uri": str(tmp_path)})
        assert r.status_code == 200, r.text
        assert [a["version"] for a in r.json()["adapters"]] == ["policy@v1"]
        r = await _adapters(h, "promote", {"version": "policy@v1"})
        assert r.json()["serving_version"] == "policy@v1"
        await _adapters(h, "load", {"version": "policy@v2", "uri": str(tmp_path)})
        r = await _adapters(h, "canary", {"version": "policy@v2"})
        assert r.json()["canary_version"] == "policy@v2"
        r = await _adapters(h, "canary", {"version": None})
        assert r.json()["canary_version"] is None
        r = await _adapters(h, "rollback")
        assert r.json()["serving_version"] == "base"
        r = await h.http.get("/admin/adapters", headers=auth(ADMIN))
        assert r.json()["serving_version"] == "base"
        assert [c[0] for c in h.adapters.calls] == [
            "load",
            "promote",
            "load",
            "canary",
            "canary",
            "rollback",
        ]


async def test_manager_errors_map_to_4xx(tmp_path) -> None:
    async with harness() as h:
        r = await _adapters(h, "load", {"version": "policy@v1", "uri": str(tmp_path / "missing")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "adapter_rejected"
        r = await _adapters(h, "promote", {"version": "policy@v7"})
        assert r.status_code == 404
        r = await _adapters(h, "rollback")
        assert r.status_code == 409 and r.json()["error"]["code"] == "adapter_state_conflict"
        r = await _adapters(h, "promote", {})
        assert r.status_code == 400 and r.json()["error"]["param"] == "version"
        r = await _adapters(h, "promote", {"version": "v1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "version"


async def test_erase_user_emits_user_erased() -> None:
    from schemas.events import UserErased

    async with harness() as h:
        admin = auth(ADMIN)
        r = await h.http.post("/admin/users/erase", headers=admin, json={"user_id": "abc123"})
        assert r.status_code == 202 and r.json()["user_id"] == "abc123"
        by_name = {"user": "alice", "api_key": API_KEY, "reason": "user request"}
        r = await h.http.post("/admin/users/erase", headers=admin, json=by_name)
        assert r.status_code == 202
        first, second = h.events.events
        assert isinstance(first, UserErased) and first.requested_by == "admin-api"
        # The same pseudonymous id chat events carry for alice under that key.
        assert (
            second.user_id
            == h.app.state.services.user_hash(API_KEY, "alice")
            == r.json()["user_id"]
        )
        for bad in ({}, {"user": "alice"}, {"user_id": "x", "user": "alice", "api_key": API_KEY}):
            r = await h.http.post("/admin/users/erase", headers=admin, json=bad)
            assert r.status_code == 400, bad
        r = await h.http.post("/admin/users/erase", headers=auth(), json={"user_id": "x"})
        assert r.status_code == 401
        assert len(h.events.events) == 2


async def test_erase_by_name_refuses_an_api_key_that_is_not_configured() -> None:
    async with harness(make_settings(retired_api_keys=["old-key"])) as h:
        admin = auth(ADMIN)
        for key in ("typo", API_KEY + " ", ""):
            by_name = {"user": "alice", "api_key": key}
            r = await h.http.post("/admin/users/erase", headers=admin, json=by_name)
            assert r.status_code in (400, 404), key  # "" fails the schema (min length 1)
            if key:
                assert r.json()["error"]["code"] == "unknown_api_key", r.text
        assert h.events.events == []
        # A retired key still names its users, so they can be erased after the key is gone.
        r = await h.http.post(
            "/admin/users/erase", headers=admin, json={"user": "alice", "api_key": "old-key"}
        )
        assert r.status_code == 202
        assert r.json()["user_id"] == h.app.state.services.user_hash("old-key", "alice")
        r = await h.http.get("/v1/models", headers=auth("old-key"))
        assert r.status_code == 401  # retired: no longer a chat credential


async def test_erase_by_name_without_configured_keys_points_to_user_id() -> None:
    async with harness(make_settings(api_keys=[])) as h:
        by_name = {"user": "alice", "api_key": "anything"}
        r = await h.http.post("/admin/users/erase", headers=auth(ADMIN), json=by_name)
        assert r.status_code == 404 and "erase by user_id" in r.json()["error"]["message"]
