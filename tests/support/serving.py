"""Helpers for the HTTP-layer tests: an app on the fake engine with recording fakes, the
official openai client talking to it through an in-process ASGI transport, and the credentials,
ids and web-page headers the tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.engines.fake import FakeEngine
from serving.settings import ServingSettings
from tests.serving.fakes import FakeAdapters, RecordingEvents

API_KEY = "test-api-key-0123456789"
ADMIN = "test-admin-token-0123456789"
HMAC_KEY = "test-hmac-key-0123456789abcdef"


def make_settings(**overrides: Any) -> ServingSettings:
    values: dict[str, Any] = dict(
        engine="fake",
        kafka_enabled=False,
        api_keys=[API_KEY],
        admin_token=ADMIN,
        hmac_key=HMAC_KEY,
        unrequested_pair_share=0.0,
    )
    values.update(overrides)
    return ServingSettings(**values)


@dataclass
class Harness:
    app: FastAPI
    engine: FakeEngine
    events: Any  # RecordingEvents unless a test passes the real EventLogger
    adapters: FakeAdapters
    http: httpx.AsyncClient

    def openai(self, api_key: str = API_KEY, **kwargs: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(
            base_url="http://testserver/v1",
            api_key=api_key,
            # openai 3.x types its client against httpx2; httpx's client is call-compatible.
            http_client=cast(Any, self.http),
            max_retries=0,
            **kwargs,
        )


@asynccontextmanager
async def harness(
    settings: ServingSettings | None = None,
    engine: FakeEngine | None = None,
    events: Any = None,
) -> AsyncIterator[Harness]:
    """The app on ``engine`` (default a fresh FakeEngine), ``events`` (default a recorder)."""
    settings = settings or make_settings()
    engine = engine or FakeEngine()
    events = events if events is not None else RecordingEvents()
    adapters = FakeAdapters(engine)
    app = create_app(settings, engine=engine, events=events, adapters=adapters)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield Harness(app, engine, events, adapters, http)


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def inner_pair_id(h: Harness, token: str, user: str | None, key: str = API_KEY) -> str:
    """The event-level pair id inside a signed API pair id (exact: compare with ==, never in)."""
    services = h.app.state.services
    return str(services.signer.verify_pair(token, services.user_hash(key, user)).pair_id)


def inner_response_id(h: Harness, token: str, user: str | None, key: str = API_KEY) -> str:
    """The event-level response id inside a signed API response id."""
    services = h.app.state.services
    return str(services.signer.verify_response(token, services.user_hash(key, user)).response_id)


ORIGIN = "http://testserver"
# What the web page asks: one two-answer comparison.
PAGE_CHAT = {"messages": [{"role": "user", "content": "hi"}], "pair": True, "k": 2, "user": "web"}


async def web_session(h: Harness) -> str:
    """Load the web page; the session cookie it set (checked, and kept out of the client's jar)."""
    from serving.security import WebSessions

    page = await h.http.get("/")
    assert page.status_code == 200, page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    cookie = page.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/v1"):
        assert attribute in cookie, cookie
    token: str = page.cookies[WebSessions.COOKIE]
    h.http.cookies.clear()
    assert token not in page.text  # no script on the page can read it
    return token


def page_headers(token: str, origin: str | None = ORIGIN, **extra: str) -> dict[str, str]:
    """The headers a browser sends with the web page's own fetch()."""
    from serving.security import WebSessions

    headers = {"Cookie": f"{WebSessions.COOKIE}={token}", **extra}
    if origin is not None:
        headers["Origin"] = origin
    return headers


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by name and labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 for a sample not exported (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(h: Harness) -> Samples:
    """The app's /metrics, parsed."""
    return metric_samples((await h.http.get("/metrics")).text)
