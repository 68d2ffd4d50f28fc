"""The serving application: wiring of engine, event logger, adapter manager and routes.

``create_app`` takes every collaborator as an optional argument, so tests inject fakes and the
CLI builds the real ones from settings. Lifespan order: the engine loads the base model, the
event logger starts, then the adapter manager loads the serving adapter; on shutdown (after
uvicorn has stopped accepting connections and drained in-flight requests) the adapter manager
and engine stop first and the event logger last, so every served event is flushed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from serving.deps import AdapterControl, EventSink, Services
from serving.engines.protocol import Engine
from serving.errors import install_error_handlers
from serving.metrics import READY, HTTPMetricsMiddleware
from serving.routes import admin, chat, feedback, health, metrics, models, web
from serving.security import IdSigner, WebSessions
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)


def build_engine(settings: ServingSettings) -> Engine:
    if settings.engine == "fake":
        from serving.engines.fake import FakeEngine

        return FakeEngine(token_delay=settings.fake_token_delay_seconds)
    if settings.engine == "vllm":
        from serving.engines.vllm_engine import VLLMEngine

        return VLLMEngine.from_settings(settings)
    from serving.engines.transformers_engine import TransformersEngine

    return TransformersEngine.from_settings(settings)


def build_services(
    settings: ServingSettings,
    engine: Engine | None = None,
    events: EventSink | None = None,
    adapters: AdapterControl | None = None,
) -> Services:
    engine = engine or build_engine(settings)
    if events is None:
        from serving.events.logger import EventLogger

        events = EventLogger(settings)
    if adapters is None:
        from serving.adapters.manager import AdapterManager

        adapters = AdapterManager(settings, engine, events)
    key = settings.hmac_key.get_secret_value()
    return Services(
        settings=settings,
        engine=engine,
        events=events,
        adapters=adapters,
        signer=IdSigner(key, settings.pair_ttl_seconds),
        web_sessions=WebSessions(key, settings.web_session_ttl_seconds),
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    await services.engine.start()
    services.engine_started = True
    await services.events.start()
    await services.adapters.start()
    READY.set(1 if services.adapters.ready() else 0)
    logger.info(
        "serving %s with adapter %s on engine %s",
        services.settings.model_name,
        services.adapters.serving_version(),
        services.engine.name,
    )
    try:
        yield
    finally:
        READY.set(0)
        for name, stop in (
            ("adapter manager", services.adapters.stop),
            ("engine", services.engine.stop),
            ("event logger", services.events.stop),
        ):
            try:
                await stop()
            except Exception:
                logger.exception("%s did not stop cleanly", name)
        services.engine_started = False


def create_app(
    settings: ServingSettings | None = None,
    *,
    engine: Engine | None = None,
    events: EventSink | None = None,
    adapters: AdapterControl | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    settings = settings or ServingSettings()
    app = FastAPI(
        title="rlhf-serving", lifespan=_lifespan, docs_url=None, redoc_url=None, **fastapi_kwargs
    )
    app.state.services = build_services(settings, engine, events, adapters)
    install_error_handlers(app)
    app.add_middleware(HTTPMetricsMiddleware, max_body_bytes=settings.max_request_bytes)
    for module in (chat, models, feedback, admin, health, metrics):
        app.include_router(module.router)
    if settings.web_enabled:
        app.include_router(web.router)
    return app
