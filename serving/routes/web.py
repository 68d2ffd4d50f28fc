"""The voting web page: ``/`` (HTML plus a fresh session cookie) and its static assets.

The page holds no API key. Each load of ``/`` sets a short-lived signed web session
(``serving.security.WebSessions``) as an HttpOnly, SameSite=Strict cookie for ``/v1``, which the
page's own requests carry. The session is accepted only as that cookie, from this origin, for
the page's chat (two-answer comparisons) and feedback, within per-session rate limits; it
expires (``web_session_ttl_seconds``) and is its own pseudonymous user. New sessions are
rate-limited per client address, and all sessions of one address share a chat and a feedback
budget (``serving.ratelimit``). With ``require_auth`` the page is off unless ``web_with_auth``
turns it on. A strict Content-Security-Policy allows only this origin's script; the page and its
assets also send X-Frame-Options, Referrer-Policy, nosniff and, over https only, HSTS.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from serving.deps import ServicesDep, client_address
from serving.errors import APIError
from serving.security import WebSessions

router = APIRouter()
_WEB = Path(__file__).resolve().parent.parent / "web"
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# On every page response. X-Frame-Options backs up CSP frame-ancestors for browsers without
# it; no-referrer keeps the page's address out of requests to anywhere else.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# One year, this host only: includeSubDomains or preload would bind hosts this service does
# not own.
_HSTS = "max-age=31536000"


def _security_headers(request: Request) -> dict[str, str]:
    """The page's security headers; HSTS only over https (the scheme a trusted proxy reports,
    ``serving.forwarded``): browsers ignore it over http, where it would only mislead."""
    headers = dict(_SECURITY_HEADERS)
    if request.url.scheme == "https":
        headers["Strict-Transport-Security"] = _HSTS
    return headers


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request, services: ServicesDep) -> HTMLResponse:
    services.limits.check_new_session(client_address(request))
    html = (_WEB / "index.html").read_text(encoding="utf-8")
    # The model name uses only [A-Za-z0-9._:@-]: safe inside an attribute value.
    html = html.replace("__MODEL__", services.settings.model_name)
    response = HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": _CSP,
            **_security_headers(request),
        },
    )
    response.set_cookie(
        WebSessions.COOKIE,
        services.web_sessions.issue(),
        max_age=services.settings.web_session_ttl_seconds,
        path="/v1",
        # https directly or behind a trusted proxy's X-Forwarded-Proto (serving.forwarded).
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/web/{name}", include_in_schema=False)
async def asset(name: str, request: Request) -> FileResponse:
    if name not in _ASSETS:
        raise APIError(404, f"no such asset {name!r}", code="not_found")
    return FileResponse(_WEB / name, media_type=_ASSETS[name], headers=_security_headers(request))
