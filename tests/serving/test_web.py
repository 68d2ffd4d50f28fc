"""The web page: each load gets a session cookie that works for that page's own chat and feedback
only (same origin, page-shaped requests, rate-limited), and never as a bearer API key."""

from __future__ import annotations

from typing import Any

import pytest

from serving.security import WebSessions
from tests.support.serving import (
    HMAC_KEY,
    ORIGIN,
    PAGE_CHAT,
    auth,
    harness,
    make_settings,
    page_headers,
    web_session,
)

pytestmark = pytest.mark.anyio


async def _chat(h: Any, headers: dict[str, str], body: dict[str, Any] = PAGE_CHAT) -> Any:
    return await h.http.post("/v1/chat/completions", headers=headers, json=body)


async def test_page_session_chats_and_votes_as_its_own_user() -> None:
    async with harness() as h:
        token = await web_session(h)
        assert token != await web_session(h)  # each load is its own session
        r = await _chat(h, page_headers(token, **{"Sec-Fetch-Site": "same-origin"}))
        assert r.status_code == 200, r.text
        pair_id = r.json()["pair_id"]
        vote = {"pair_id": pair_id, "choice": "b", "user": "web"}
        v = await h.http.post("/v1/feedback", headers=page_headers(token), json=vote)
        assert v.status_code == 200, v.text
        # Another page (another session) cannot vote on it.
        other = await web_session(h)
        v = await h.http.post("/v1/feedback", headers=page_headers(other), json=vote)
        assert v.status_code == 403
        # The session is not an admin credential.
        assert (await h.http.get("/admin/adapters", headers=page_headers(token))).status_code == 401


async def test_a_session_is_not_a_bearer_api_key() -> None:
    async with harness() as h:
        token = await web_session(h)
        r = await _chat(h, {**auth(token), "Origin": ORIGIN})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        v = await h.http.post(
            "/v1/feedback", headers=auth(token), json={"pair_id": "x", "choice": "a"}
        )
        assert v.status_code == 401
        # Nor does the cookie open routes the page does not use.
        assert (await h.http.get("/v1/models", headers=page_headers(token))).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": None},
        {"origin": "null"},
        {"origin": "http://testserver:8080"},
        {"origin": ORIGIN, "Sec-Fetch-Site": "cross-site"},
        {"origin": ORIGIN, "Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_session_works_only_from_the_pages_origin(headers: dict[str, Any]) -> None:
    async with harness() as h:
        token = await web_session(h)
        r = await _chat(h, page_headers(token, **headers))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "cross_origin_session"
        assert not h.events.events


@pytest.mark.parametrize(
    "patch",
    [
        {"pair": False},
        {"pair": None},
        {"k": 3},
        {"stream": True},
        {"max_tokens": 512},
        {"adapter_version": "base"},
    ],
)
async def test_a_session_may_only_ask_what_the_page_asks(patch: dict[str, Any]) -> None:
    async with harness() as h:
        token = await web_session(h)
        r = await _chat(h, page_headers(token), {**PAGE_CHAT, **patch})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "web_session_scope"


async def test_tampered_and_expired_sessions_are_refused() -> None:
    async with harness() as h:
        token = await web_session(h)
        r = await _chat(h, page_headers(token[:-3] + "AAA"))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_session"
        expired = WebSessions(HMAC_KEY, -10).issue()
        r = await _chat(h, page_headers(expired))
        assert r.status_code == 401 and "reload" in r.json()["error"]["message"]


async def test_web_page_is_off_when_auth_is_required_unless_enabled() -> None:
    secrets = {"admin_token": "a" * 32, "hmac_key": HMAC_KEY, "require_auth": True}
    async with harness(make_settings(**secrets)) as h:
        assert (await h.http.get("/")).status_code == 404
        # A validly signed session is no credential either.
        token = WebSessions(HMAC_KEY, 3600).issue()
        assert (await _chat(h, page_headers(token))).status_code == 401
    async with harness(make_settings(**secrets, web_with_auth=True)) as h:
        token = await web_session(h)
        assert (await _chat(h, page_headers(token))).status_code == 200


async def test_new_sessions_are_rate_limited_per_address() -> None:
    settings = make_settings(web_sessions_per_minute=10, rate_limit_burst_seconds=30)
    async with harness(settings) as h:
        statuses = [(await h.http.get("/")).status_code for _ in range(50)]
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
        r = await h.http.get("/")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert WebSessions.COOKIE not in r.cookies


async def test_web_can_be_disabled() -> None:
    async with harness(make_settings(web_enabled=False)) as h:
        assert (await h.http.get("/")).status_code == 404


async def test_assets() -> None:
    async with harness() as h:
        js = await h.http.get("/web/app.js")
        assert js.status_code == 200 and "textContent" in js.text
        assert "Authorization" not in js.text  # the cookie is the page's only credential
        assert (await h.http.get("/web/style.css")).status_code == 200
        assert (await h.http.get("/web/..%2Fapp.py")).status_code == 404


_PAGE_SECURITY = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


async def test_page_and_assets_send_security_headers_and_hsts_only_over_https() -> None:
    async with harness() as h:
        for path in ("/", "/web/app.js", "/web/style.css"):
            plain = await h.http.get(path)
            assert plain.status_code == 200
            assert _PAGE_SECURITY.items() <= plain.headers.items(), (path, plain.headers)
            assert "strict-transport-security" not in plain.headers  # wrong over plain http
            secure = await h.http.get(f"https://testserver{path}")
            assert _PAGE_SECURITY.items() <= secure.headers.items()
            assert secure.headers["strict-transport-security"] == "max-age=31536000"
        page = await h.http.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("trusted", "behind_tls"),
    [("127.0.0.1", True), ("*", True), ("10.0.0.1", False)],  # the test client is 127.0.0.1
)
async def test_a_trusted_proxys_https_makes_the_cookie_secure_and_sends_hsts(
    trusted: str, behind_tls: bool
) -> None:
    async with harness(make_settings(forwarded_allow_ips=trusted)) as h:
        page = await h.http.get(
            "/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
        )
        assert page.status_code == 200
        cookie = page.headers["set-cookie"].lower()
        assert ("; secure" in cookie) is behind_tls, cookie
        assert ("strict-transport-security" in page.headers) is behind_tls
