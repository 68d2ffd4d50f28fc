"""The app with the real AdapterManager (fake engine, no broker) and an admin HTTP client: what
tests of the admin routes against a real adapter store share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from serving.adapters import AdapterManager
from serving.app import create_app
from serving.engines.fake import FakeEngine
from serving.settings import ServingSettings
from tests.serving.adapters.fakes import RecordingEvents

ADMIN = "test-admin-token-0123456789"


@dataclass
class AdminApp:
    http: httpx.AsyncClient  # holds the admin token
    manager: AdapterManager
    events: RecordingEvents
    settings: ServingSettings


@asynccontextmanager
async def admin_app(
    tiny_model_dir: Path, store: Path, cache: Path, **settings: Any
) -> AsyncIterator[AdminApp]:
    """An HTTP client holding the admin token, and the manager behind the app it calls."""
    values: dict[str, Any] = {
        "engine": "fake",
        "kafka_enabled": False,
        "model_dir": str(tiny_model_dir),
        "adapter_store": str(store),
        "adapter_cache_dir": str(cache),
        "admin_token": ADMIN,
        "hmac_key": "test-hmac-key-0123456789abcdef",
    }
    config = ServingSettings.model_validate({**values, **settings})
    engine, events = FakeEngine(), RecordingEvents()
    manager = AdapterManager(config, engine, events)
    app = create_app(config, engine=engine, events=events, adapters=manager)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", headers=admin) as http,
    ):
        yield AdminApp(http, manager, events, config)
