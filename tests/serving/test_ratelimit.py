"""Rate limits: the token bucket itself, and 429s with Retry-After on chat and feedback, per API
key, per web session and per client address (shared by all of its web sessions)."""

from __future__ import annotations

from typing import Any

import pytest

from serving.errors import APIError
from serving.ratelimit import RateLimiter, RateLimits, address_key
from tests.support.clock import FakeClock
from tests.support.serving import (
    API_KEY,
    PAGE_CHAT,
    auth,
    harness,
    make_settings,
    page_headers,
    web_session,
)

HI = [{"role": "user", "content": "hi"}]


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst_seconds=3, clock=clock)  # 1/s, burst 3
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(1.0)
    assert limiter.take("other") == 0.0  # each key has its own bucket
    clock.now += 0.5
    assert limiter.take("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("k") == 0.0
    clock.now += 3600
    assert [limiter.take("k") for _ in range(4)][-1] > 0  # refills to the burst, no further


def test_slow_limits_still_allow_one_request_and_zero_means_none() -> None:
    clock = FakeClock()
    slow = RateLimiter(per_minute=1, burst_seconds=1, clock=clock)
    assert slow.take("k") == 0.0 and slow.take("k") == pytest.approx(60.0)
    off = RateLimiter(per_minute=0, burst_seconds=1, clock=clock)
    assert all(off.take("k") == 0.0 for _ in range(1000))


def test_bucket_count_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst_seconds=1, max_buckets=3, clock=clock)
    for key in ("a", "b", "c", "d"):
        limiter.take(key)
    assert limiter.take("b") > 0  # still tracked
    assert limiter.take("a") == 0.0  # least recently used: dropped, comes back full
    assert len(limiter._buckets) == 3


def _refused(r: Any) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    error = r.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"


@pytest.mark.anyio
async def test_chat_and_feedback_are_limited_per_api_key() -> None:
    other_key = "another-api-key-0123456789"
    settings = make_settings(
        api_keys=[API_KEY, other_key],
        key_chat_per_minute=4,
        key_feedback_per_minute=2,
        rate_limit_burst_seconds=30,
    )
    async with harness(settings) as h:
        chat = {"messages": HI, "pair": True, "user": "alice"}
        ok = [await h.http.post("/v1/chat/completions", json=chat, headers=auth()) for _ in "ab"]
        assert [r.status_code for r in ok] == [200, 200]
        _refused(await h.http.post("/v1/chat/completions", json=chat, headers=auth()))
        other = await h.http.post("/v1/chat/completions", json=chat, headers=auth(other_key))
        assert other.status_code == 200  # another key, another bucket
        vote = {"pair_id": ok[0].json()["pair_id"], "choice": "a", "user": "alice"}
        assert (await h.http.post("/v1/feedback", json=vote, headers=auth())).status_code == 200
        _refused(await h.http.post("/v1/feedback", json=vote, headers=auth()))


@pytest.mark.anyio
async def test_chat_and_feedback_are_limited_per_web_session() -> None:
    settings = make_settings(
        web_chat_per_minute=2, web_feedback_per_minute=2, rate_limit_burst_seconds=30
    )
    async with harness(settings) as h:
        token = await web_session(h)
        as_page = page_headers(token)
        r = await h.http.post("/v1/chat/completions", json=PAGE_CHAT, headers=as_page)
        assert r.status_code == 200, r.text
        _refused(await h.http.post("/v1/chat/completions", json=PAGE_CHAT, headers=as_page))
        as_fresh_page = page_headers(await web_session(h))
        r2 = await h.http.post("/v1/chat/completions", json=PAGE_CHAT, headers=as_fresh_page)
        assert r2.status_code == 200
        vote = {"pair_id": r.json()["pair_id"], "choice": "a", "user": "web"}
        assert (await h.http.post("/v1/feedback", json=vote, headers=as_page)).is_success
        _refused(await h.http.post("/v1/feedback", json=vote, headers=as_page))
        # The API key's own buckets are untouched by the sessions'.
        plain = {"messages": HI, "user": "alice"}
        assert (await h.http.post("/v1/chat/completions", json=plain, headers=auth())).is_success


@pytest.mark.anyio
async def test_default_limits_leave_ordinary_use_alone() -> None:
    async with harness() as h:
        for _ in range(40):
            r = await h.http.post(
                "/v1/chat/completions", json={"messages": HI, "user": "a"}, headers=auth()
            )
            assert r.status_code == 200


def test_address_budget_is_shared_by_sessions_and_refusal_costs_the_session_nothing() -> None:
    settings = make_settings(
        web_chat_per_minute=4, web_address_chat_per_minute=6, rate_limit_burst_seconds=30
    )  # bursts: 2 per session, 3 per address
    limits = RateLimits(settings, clock=FakeClock())
    limits.check("chat", True, "web:s1", "192.0.2.1")
    limits.check("chat", True, "web:s2", "192.0.2.1")
    limits.check("chat", True, "web:s3", "192.0.2.1")
    with pytest.raises(APIError) as refused:
        limits.check("chat", True, "web:s4", "192.0.2.1")
    assert refused.value.status == 429 and "address" in refused.value.message
    limits.check("chat", True, "web:s4", "192.0.2.2")  # another address: its own budget
    limits.check("chat", True, "web:s4", "192.0.2.2")  # s4's refused request was refunded
    # API keys are not counted per address: the address budget is the web page's alone.
    for _ in range(10):
        limits.check("chat", False, "key:k", "192.0.2.1")


def test_ipv6_clients_are_counted_per_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1" and address_key("unknown") == "unknown"


async def _page_session(h: Any, address: str) -> dict[str, str]:
    """The headers of a web page that client ``address`` opened (behind the trusted test peer,
    which names the client in X-Forwarded-For)."""
    forwarded = {"X-Forwarded-For": address}
    page = await h.http.get("/", headers=forwarded)
    assert page.status_code == 200, page.text
    token = str(page.cookies["rlhf_session"])
    h.http.cookies.clear()
    return page_headers(token, **forwarded)


@pytest.mark.anyio
async def test_web_sessions_from_one_address_share_its_chat_and_feedback_budget() -> None:
    settings = make_settings(
        web_sessions_per_minute=20,
        web_chat_per_minute=4,  # 2 per session at once
        web_feedback_per_minute=4,
        web_address_chat_per_minute=10,  # 5 per address at once, however many sessions
        web_address_feedback_per_minute=6,
        rate_limit_burst_seconds=30,
    )
    async with harness(settings) as h:
        pages = [await _page_session(h, "198.51.100.7") for _ in range(5)]
        chats = [
            await h.http.post("/v1/chat/completions", json=PAGE_CHAT, headers=page)
            for page in pages
            for _ in range(3)
        ]
        accepted = [r for r in chats if r.status_code == 200]
        assert len(accepted) == 5  # not 5 sessions x 2
        for r in chats:
            if r.status_code != 200:
                _refused(r)
        assert "address" in chats[-1].json()["error"]["message"]
        pair_ids = [r.json()["pair_id"] for r in accepted]
        votes = [
            await h.http.post(
                "/v1/feedback",
                json={"pair_id": pair_id, "choice": "a", "user": "web"},
                headers=page,
            )
            for page in pages
            for pair_id in pair_ids
        ]
        # Past the limits: 3 per address at once (votes on other sessions' pairs are 403s).
        assert sum(v.status_code != 429 for v in votes) == 3
        # Another address has a budget of its own.
        elsewhere = await _page_session(h, "203.0.113.9")
        r = await h.http.post("/v1/chat/completions", json=PAGE_CHAT, headers=elsewhere)
        assert r.status_code == 200, r.text
