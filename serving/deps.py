"""Dependencies shared by the routes: the service bundle, the caller's identity, admin checks.

After full-stack-fastapi-template's ``api/deps.py``: routes declare what they need with
``Annotated[..., Depends()]`` aliases and never reach into globals, so tests build an app with
fakes injected (``serving.app.create_app``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from serving.engines.protocol import Engine
from serving.errors import APIError
from serving.security import IdSigner, WebSessions, bearer, constant_time_in, user_hash
from serving.settings import ServingSettings


class EventSink(Protocol):
    """What the HTTP layer needs from ``serving.events.logger.EventLogger``."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def emit(self, event: Any) -> None: ...
    def counts(self) -> dict[str, int]: ...


class AdapterControl(Protocol):
    """What the HTTP layer needs from ``serving.adapters.manager.AdapterManager``."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def serving_version(self) -> str: ...
    def canary_version(self) -> str | None: ...
    def list(self) -> list[Any]: ...
    async def load(self, version: str, uri: str | None = None) -> Any: ...
    async def promote(self, version: str) -> Any: ...
    async def rollback(self) -> str: ...
    def set_canary(self, version: str | None) -> Any: ...
    def ready(self) -> bool: ...


@dataclass
class Services:
    settings: ServingSettings
    engine: Engine
    events: EventSink
    adapters: AdapterControl
    signer: IdSigner
    web_sessions: WebSessions
    engine_started: bool = False

    def user_hash(self, api_key: str, user: str | None) -> str:
        return user_hash(self.settings.hmac_key.get_secret_value(), api_key, user)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclass(frozen=True)
class Caller:
    # The credential the user hash is keyed on: the API key, "web:<session>" for the web page,
    # or "" when auth is off. Never logged or put in an event.
    api_key: str
    web: bool = False


def get_caller(request: Request, services: ServicesDep) -> Caller:
    token = bearer(request.headers.get("authorization"))
    if token and services.settings.web_enabled:
        session = services.web_sessions.verify(token)
        if session is not None:
            return Caller(session, web=True)
    keys = [k.get_secret_value() for k in services.settings.api_keys]
    if not keys:
        return Caller("")
    if token and constant_time_in(token, keys):
        return Caller(token)
    raise APIError(
        401,
        "missing or invalid API key: send 'Authorization: Bearer <key>'",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


CallerDep = Annotated[Caller, Depends(get_caller)]


def is_admin(services: Services, token: str | None) -> bool:
    admin = services.settings.admin_token.get_secret_value()
    return bool(token) and constant_time_in(token or "", [admin])


def require_admin(request: Request, services: ServicesDep) -> None:
    if not is_admin(services, bearer(request.headers.get("authorization"))):
        raise APIError(
            401,
            "admin routes need 'Authorization: Bearer <admin token>'",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Depends(require_admin)
