"""The voting web page: ``/`` (HTML with a fresh session token) and its static assets.

The page holds no API key. Each load of ``/`` embeds a short-lived signed web session token
(``serving.security.WebSessions``) in a meta tag; the page sends it as its bearer token. That
token is accepted for chat and feedback only, expires (``web_session_ttl_seconds``), and is
its own pseudonymous user. A strict Content-Security-Policy allows only this origin's script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from serving.deps import ServicesDep
from serving.errors import APIError

router = APIRouter()
_WEB = Path(__file__).resolve().parent.parent / "web"
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(services: ServicesDep) -> HTMLResponse:
    html = (_WEB / "index.html").read_text(encoding="utf-8")
    # Token and model name use only [A-Za-z0-9._:@-]: safe inside an attribute value.
    html = html.replace("__SESSION_TOKEN__", services.web_sessions.issue())
    html = html.replace("__MODEL__", services.settings.model_name)
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/web/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise APIError(404, f"no such asset {name!r}", code="not_found")
    return FileResponse(
        _WEB / name, media_type=_ASSETS[name], headers={"X-Content-Type-Options": "nosniff"}
    )
