"""Rate limits: the token bucket itself, and 429s with Retry-After on chat and feedback."""

from __future__ import annotations

from typing import Any

import pytest

from serving.ratelimit import RateLimiter
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
