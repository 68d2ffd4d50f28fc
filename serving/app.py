"""The serving application: wiring of engine, event logger, adapter manager and routes.

``create_app`` takes every collaborator as an optional argument, so tests inject fakes and the
CLI builds the real ones from settings. Lifespan order: the event logger starts, the engine loads
the base model, then the adapter manager loads the serving adapter; on shutdown (after uvicorn
has stopped accepting connections and drained in-flight requests) they stop in reverse, the
event logger last, so every served event is flushed. A part that fails to start stops those
already started.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from serving.deps import AdapterControl, EventSink, Services
from serving.engines import create_engine
from serving.engines.protocol import Engine
from serving.errors import install_error_handlers
from serving.forwarded import ForwardedHeadersMiddleware
from serving.idempotency import IdempotencyKeys
from serving.metrics import HTTPMetricsMiddleware
from serving.openapi import install_openapi
from serving.ratelimit import RateLimits
from serving.routes import admin, chat, feedback, health, metrics, models, web
from serving.security import IdSigner, WebSessions
from serving.settings import ServingSettings, warn_deprecated_env

logger = logging.getLogger(__name__)


def build_services(
    settings: ServingSettings,
    engine: Engine | None = None,
    events: EventSink | None = None,
    adapters: AdapterControl | None = None,
) -> Services:
    engine = engine or create_engine(settings)
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
        limits=RateLimits(settings),
        idempotency=IdempotencyKeys(
            settings.idempotency_key_ttl_seconds, settings.idempotency_keys_max
        ),
    )


def _logged(name: str, stop: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await stop()
        except Exception:
            logger.exception("%s did not stop cleanly", name)

    return run


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    # Started in this order, stopped in reverse: the event logger is the last to stop, so it
    # flushes whatever the drained requests and the adapter manager emitted.
    async with AsyncExitStack() as stack:
        await services.events.start()
        stack.push_async_callback(_logged("event logger", lambda: services.events.stop()))
        await services.engine.start()
        services.engine_started = True
        stack.push_async_callback(_logged("engine", lambda: services.engine.stop()))
        stack.callback(setattr, services, "engine_started", False)
        await services.adapters.start()
        stack.push_async_callback(_logged("adapter manager", lambda: services.adapters.stop()))
        logger.info(
            "serving %s with adapter %s on engine %s",
            services.settings.model_name,
            services.adapters.serving_version(),
            services.engine.name,
        )
        yield


def create_app(
    settings: ServingSettings | None = None,
    *,
    engine: Engine | None = None,
    events: EventSink | None = None,
    adapters: AdapterControl | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    settings = settings or ServingSettings()
    warn_deprecated_env(os.environ)
    app = FastAPI(
        title="rlhf-serving", lifespan=_lifespan, docs_url=None, redoc_url=None, **fastapi_kwargs
    )
    app.state.services = build_services(settings, engine, events, adapters)
    install_error_handlers(app)
    install_openapi(app, settings)
    app.add_middleware(HTTPMetricsMiddleware, max_body_bytes=settings.max_request_bytes)
    # Added last, so outermost: everything inside sees the client behind the trusted proxies.
    app.add_middleware(
        ForwardedHeadersMiddleware,
        trusted=settings.forwarded_allow_ips,
        hops=settings.forwarded_trusted_hops,
    )
    for module in (chat, models, feedback, admin, health, metrics):
        app.include_router(module.router)
    if settings.web_active:
        app.include_router(web.router)
    return app
