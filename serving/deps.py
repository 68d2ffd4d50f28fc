"""Dependencies shared by the routes: the service bundle, the caller's identity, admin checks.

After full-stack-fastapi-template's ``api/deps.py``: routes declare what they need with
``Annotated[..., Depends()]`` aliases and never reach into globals, so tests build an app with
fakes injected (``serving.app.create_app``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

from fastapi import Depends, Request

from serving.api_models import AdapterInfo
from serving.engines.protocol import Engine
from serving.errors import APIError
from serving.idempotency import IdempotencyKeys
from serving.pair_sampling import RecentDifferences
from serving.ratelimit import RateLimits
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
    def list(self) -> list[AdapterInfo]: ...
    async def load(self, version: str, uri: str | None = None) -> Any: ...
    async def promote(self, version: str) -> Any: ...
    async def rollback(self) -> str: ...
    def set_canary(self, version: str | None) -> None: ...
    def ready(self) -> bool: ...
    def degraded(self) -> bool: ...


@dataclass
class Services:
    settings: ServingSettings
    engine: Engine
    events: EventSink
    adapters: AdapterControl
    signer: IdSigner
    web_sessions: WebSessions
    limits: RateLimits
    idempotency: IdempotencyKeys
    engine_started: bool = False
    # Informative pairing's memory of recent pairs (serving.pair_sampling), made on first use.
    recent_differences: RecentDifferences | None = None

    def pair_differences(self) -> RecentDifferences:
        if self.recent_differences is None:
            self.recent_differences = RecentDifferences(self.settings.pair_difference_window)
        return self.recent_differences

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
    # What the rate limits count against: the API key, the web session, or (auth off) the
    # client's address.
    limit_key: str = ""


def client_address(request: Request) -> str:
    """The client's address (behind trusted proxies, the one ``serving.forwarded`` took from
    the right of X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def get_caller(request: Request, services: ServicesDep) -> Caller:
    """An API-key caller. Web sessions are not accepted here (``get_page_caller`` takes them)."""
    token = bearer(request.headers.get("authorization"))
    keys = [k.get_secret_value() for k in services.settings.api_keys]
    if not keys:
        return Caller("", limit_key=f"addr:{client_address(request)}")
    if token and constant_time_in(token, keys):
        return Caller(token, limit_key=f"key:{token}")
    raise APIError(
        401,
        "missing or invalid API key: send 'Authorization: Bearer <key>'",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


CallerDep = Annotated[Caller, Depends(get_caller)]


def same_origin(request: Request) -> bool:
    """Whether a browser sent this request from a page of this very origin.

    Browsers send ``Origin`` with every POST and cannot be made to forge it; comparing it with
    ``Host`` (not the scheme) keeps working behind a proxy that terminates TLS.
    """
    if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return False
    origin, host = request.headers.get("origin"), request.headers.get("host")
    if not origin or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def get_page_caller(request: Request, services: ServicesDep) -> Caller:
    """The web page's own session (its cookie, sent from its own origin), else an API key.

    A bearer token always means an API key: a session is only ever accepted as the cookie the
    page got, so it cannot be lifted into a script as a free API key for other routes.
    """
    cookie = request.cookies.get(WebSessions.COOKIE)
    if not services.settings.web_active or not cookie or request.headers.get("authorization"):
        return get_caller(request, services)
    session = services.web_sessions.verify(cookie)
    if session is None:
        raise APIError(
            401,
            "the web session is invalid or has expired: reload the page",
            code="invalid_session",
        )
    if not same_origin(request):
        raise APIError(
            403,
            "a web session is accepted only from the page's own origin",
            code="cross_origin_session",
        )
    return Caller(session, web=True, limit_key=session)


def _rate_limited(route: str) -> Callable[[Request, Services], Caller]:
    def caller(request: Request, services: ServicesDep) -> Caller:
        who = get_page_caller(request, services)
        services.limits.check(route, who.web, who.limit_key, client_address(request))
        return who

    return caller


# The page's routes: a web session or an API key, each within its rate limit.
ChatCallerDep = Annotated[Caller, Depends(_rate_limited("chat"))]
FeedbackCallerDep = Annotated[Caller, Depends(_rate_limited("feedback"))]


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
