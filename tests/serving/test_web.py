"""The web page: served with a per-load session token that works for chat and feedback only."""

from __future__ import annotations

import re

import pytest

from tests.serving.conftest import auth, harness, make_settings

pytestmark = pytest.mark.anyio


async def _token(h) -> str:
    page = await h.http.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    match = re.search(r'name="rlhf-session" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


async def test_page_token_chats_and_votes_as_its_own_user() -> None:
    async with harness() as h:
        token = await _token(h)
        assert token != await _token(h)  # each load is its own session
        r = await h.http.post(
            "/v1/chat/completions",
            headers=auth(token),
            json={"messages": [{"role": "user", "content": "hi"}], "pair": True, "user": "web"},
        )
        assert r.status_code == 200
        pair_id = r.json()["pair_id"]
        v = await h.http.post(
            "/v1/feedback",
            headers=auth(token),
            json={"pair_id": pair_id, "choice": "b", "user": "web"},
        )
        assert v.status_code == 200
        # Another page (another session) cannot vote on it.
        other = await _token(h)
        v = await h.http.post(
            "/v1/feedback",
            headers=auth(other),
            json={"pair_id": pair_id, "choice": "b", "user": "web"},
        )
        assert v.status_code == 403
        # The session token is not an admin credential.
        assert (await h.http.get("/admin/adapters", headers=auth(token))).status_code == 401


async def test_assets_and_tampered_token() -> None:
    async with harness() as h:
        js = await h.http.get("/web/app.js")
        assert js.status_code == 200 and "textContent" in js.text
        assert (await h.http.get("/web/style.css")).status_code == 200
        assert (await h.http.get("/web/..%2Fapp.py")).status_code == 404
        token = await _token(h)
        r = await h.http.post(
            "/v1/chat/completions",
            headers=auth(token[:-3] + "AAA"),
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 401


async def test_web_can_be_disabled() -> None:
    async with harness(make_settings(web_enabled=False)) as h:
        assert (await h.http.get("/")).status_code == 404
