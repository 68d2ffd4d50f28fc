"""Per-address limits and security headers of the voting web page at one real ``serve`` process,
one :class:`FaultRow` each (group "input"):

- *sessions multiplied from one address*: many page loads, then many page chats from every
  session they gave. Sessions are free, so per-session limits alone multiply with page loads;
  all sessions of one address share one chat budget (``SERVING_WEB_ADDRESS_CHAT_PER_MINUTE``).
- *X-Forwarded-For rotation*: the same, with a fresh client-written address on the left of
  X-Forwarded-For each time; only the entry the trusted proxy appended may count. Runs only
  where the probe's own loopback connection is a trusted proxy
  (``SERVING_FORWARDED_ALLOW_IPS`` ``*``, the value docs/deployment.md gives the ingress, or a
  list with 127.0.0.1, the default); anything else ignores the header and there is nothing to
  rotate.
- *page security headers*: X-Frame-Options, Referrer-Policy, nosniff, CSP ``frame-ancestors``,
  HSTS over https only (https as a trusted proxy reports it), the cookie ``Secure`` likewise.

Expected counts come from the settings the process was started with (the world's extra env,
the environment, else the defaults); a bucket refills while the probe runs, so the bound on
accepted requests allows for the elapsed time.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from loop.faults.replica import Replica, input_row
from loop.faults.rows import FaultRow
from loop.faults.world import World
from serving.security import WebSessions
from serving.settings import ServingSettings

# Documentation ranges (RFC 5737): never a real client of the replica under test.
_RIGHT_ADDRESS = "198.51.100.23"
_OTHER_ADDRESS = "198.51.100.24"
_HTTPS_ADDRESS = "192.0.2.55"
_PAGE_CHAT = {
    "messages": [{"role": "user", "content": "Which is better?"}],
    "pair": True,
    "k": 2,
    "max_tokens": 8,  # the page may ask for less than the default length; keeps the probe quick
    "user": "web",
}
_PAGE_HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def _setting(world: World, name: str) -> str:
    """A setting of the serve process as it was started (extra env, environment, default)."""
    env = f"SERVING_{name.upper()}"
    value = world.options.extra_serving_env.get(env, os.environ.get(env))
    return str(ServingSettings.model_fields[name].default) if value is None else value


@dataclass(frozen=True)
class _Limits:
    """The page's limits in requests: what a full bucket lets through, and the refill rate."""

    burst_seconds: float
    sessions_per_minute: float
    session_chat_per_minute: float
    address_chat_per_minute: float
    trusted: str
    hops: int

    @classmethod
    def of(cls, world: World) -> _Limits:
        def number(name: str) -> float:
            return float(_setting(world, name))

        return cls(
            burst_seconds=number("rate_limit_burst_seconds"),
            sessions_per_minute=number("web_sessions_per_minute"),
            session_chat_per_minute=number("web_chat_per_minute"),
            address_chat_per_minute=number("web_address_chat_per_minute"),
            trusted=_setting(world, "forwarded_allow_ips"),
            hops=int(number("forwarded_trusted_hops")),
        )

    def burst(self, per_minute: float) -> int:
        return int(max(1.0, per_minute / 60.0 * self.burst_seconds))

    def most(self, per_minute: float, seconds: float) -> int:
        """The most a full bucket lets through in ``seconds`` (its burst plus the refill)."""
        return self.burst(per_minute) + int(per_minute / 60.0 * seconds) + 1

    @property
    def loopback_trusted(self) -> bool:
        entries = {e.strip() for e in self.trusted.split(",")}
        return "*" in entries or "127.0.0.1" in entries


class _Page:
    """The web page as a browser of one client address uses it (no cookie jar of its own)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.http = httpx.Client(base_url=root, timeout=120)

    def load(self, headers: dict[str, str] | None = None) -> httpx.Response:
        resp = self.http.get("/", headers=headers or {})
        self.http.cookies.clear()  # each load is its own page, its own session
        return resp

    def chat(self, session: str, headers: dict[str, str] | None = None) -> httpx.Response:
        page = {"Cookie": f"{WebSessions.COOKIE}={session}", "Origin": self.root}
        return self.http.post(
            "/v1/chat/completions", json=_PAGE_CHAT, headers=page | (headers or {})
        )


def _refused_well(resp: httpx.Response) -> bool:
    """A 429 in the OpenAI error shape, with the Retry-After the limiter sends."""
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return (
        resp.status_code == 429 and code == "rate_limit_exceeded" and "retry-after" in resp.headers
    )


def _sessions(
    page: _Page, loads: int, forwarded: Iterator[dict[str, str]]
) -> tuple[list[str], list[httpx.Response]]:
    """``loads`` page loads: the sessions they gave, and the refusals."""
    sessions, refused = [], []
    for _ in range(loads):
        resp = page.load(next(forwarded))
        if resp.status_code == 200:
            sessions.append(resp.cookies[WebSessions.COOKIE])
        else:
            refused.append(resp)
    return sessions, refused


def _budget_check(
    page: _Page, limits: _Limits, forwarded: Callable[[], Iterator[dict[str, str]]], what: str
) -> tuple[bool, str]:
    """Open sessions, chat from each past its own burst; the address budget must hold."""
    t0 = time.monotonic()
    session_burst = limits.burst(limits.sessions_per_minute)
    per_session = limits.burst(limits.session_chat_per_minute)
    sessions, page_refusals = _sessions(page, session_burst + 3, forwarded())
    headers = forwarded()
    chats = [page.chat(s, next(headers)) for s in sessions for _ in range(per_session + 2)]
    elapsed = time.monotonic() - t0
    accepted = sum(r.status_code == 200 for r in chats)
    refused = [r for r in chats if r.status_code != 200]
    well_formed = all(_refused_well(r) for r in refused + page_refusals)
    alone = len(sessions) * per_session  # what per-session limits alone would let through
    budget = limits.burst(limits.address_chat_per_minute)
    bound = limits.most(limits.address_chat_per_minute, elapsed)
    ok = (
        0 < len(sessions) <= limits.most(limits.sessions_per_minute, elapsed)
        and bool(page_refusals)
        and min(budget, alone) <= accepted <= bound
        and bool(refused)
        and well_formed
    )
    return ok, (
        f"{what}: {session_burst + 3} page loads gave {len(sessions)} sessions; "
        f"{len(chats)} page chats: {accepted} accepted (address budget {budget}, at most "
        f"{bound} in {elapsed:.1f} s; per-session limits alone: {alone}); refused: "
        f"{len(page_refusals)} loads, {len(refused)} chats, statuses "
        f"{sorted({r.status_code for r in refused + page_refusals})}, OpenAI error shape "
        f"with Retry-After: {well_formed}"
    )


def _forwarded_entries(limits: _Limits, right: str, left: str) -> str:
    """X-Forwarded-For as the proxies write it: the client's own entry, then the address the
    outermost trusted proxy saw, then one entry per further proxy hop."""
    inner = [f"10.0.0.{i}" for i in range(1, limits.hops)] if "*" in limits.trusted else []
    return ", ".join([left, right, *inner])


def _rotating(limits: _Limits, right: str) -> Callable[[], Iterator[dict[str, str]]]:
    def headers() -> Iterator[dict[str, str]]:
        for i in itertools.count(1):
            left = f"203.0.113.{i % 250 + 1}"
            yield {"X-Forwarded-For": _forwarded_entries(limits, right, left)}

    return headers


def _plain() -> Iterator[dict[str, str]]:
    return itertools.repeat({})


def _headers_check(page: _Page, limits: _Limits) -> tuple[bool, str]:
    checks: dict[str, bool] = {}
    for path in ("/", "/web/app.js"):
        resp = page.load() if path == "/" else page.http.get(path)
        got = {name: resp.headers.get(name) for name in _PAGE_HEADERS}
        checks[f"{path} headers"] = resp.status_code == 200 and got == _PAGE_HEADERS
        checks[f"{path} no HSTS over http"] = "strict-transport-security" not in resp.headers
        if path == "/":
            csp = resp.headers.get("content-security-policy", "")
            checks["frame-ancestors 'none'"] = "frame-ancestors 'none'" in csp
            checks["cookie not Secure over http"] = "secure" not in _cookie_flags(resp)
    if limits.loopback_trusted:  # the probe can speak as a TLS-terminating proxy
        forwarded = _forwarded_entries(limits, _HTTPS_ADDRESS, _HTTPS_ADDRESS)
        resp = page.load({"X-Forwarded-Proto": "https", "X-Forwarded-For": forwarded})
        checks["HSTS behind https proxy"] = "max-age=" in resp.headers.get(
            "strict-transport-security", ""
        )
        checks["cookie Secure behind https proxy"] = "secure" in _cookie_flags(resp)
    failed = [name for name, ok in checks.items() if not ok]
    return not failed, f"{len(checks) - len(failed)}/{len(checks)} checks hold" + (
        f"; failed: {', '.join(failed)}" if failed else ""
    )


def _cookie_flags(resp: httpx.Response) -> set[str]:
    cookie = resp.headers.get("set-cookie", "")
    return {part.strip().lower() for part in cookie.split(";")[1:]}


def _skipped(name: str, action: str, why: str) -> FaultRow:
    return FaultRow("input", name, action, "", passed=False, skipped=why)


def address_limit_rows(world: World, replica: Replica) -> list[FaultRow]:
    """The page's per-address rows; skipped (never passed) where the page or trust is off."""
    limits = _Limits.of(world)
    page = _Page(world.root)
    names = [
        ("page security headers", "GET / and /web/app.js over http, and as a trusted proxy "
         "reporting https"),
        ("sessions multiplied from one address", "page loads past the session limit, then "
         "page chats from every session past its own limit, all from one address"),
        ("X-Forwarded-For rotation", f"the same behind trusted proxies "
         f"(SERVING_FORWARDED_ALLOW_IPS={limits.trusted!r}), a fresh client-written "
         f"X-Forwarded-For entry left of {_RIGHT_ADDRESS} on every request"),
    ]  # fmt: skip
    with page.http:
        if page.http.get("/web/app.js").status_code == 404:  # unlike "/", opens no session
            return [_skipped(n, a, "the web page is off (require_auth)") for n, a in names]
        return _rows(page, limits, names, replica)


def _rows(
    page: _Page, limits: _Limits, names: list[tuple[str, str]], replica: Replica
) -> list[FaultRow]:
    (h_name, h_action), (m_name, m_action), (x_name, x_action) = names
    rows = [
        input_row(h_name, h_action, lambda: _headers_check(page, limits), replica),
        input_row(
            m_name,
            m_action,
            lambda: _budget_check(page, limits, _plain, "one address"),
            replica,
        ),
    ]
    if not limits.loopback_trusted:
        why = "needs SERVING_FORWARDED_ALLOW_IPS='*' (or a list with 127.0.0.1) for serve"
        return [*rows, _skipped(x_name, x_action, why)]
    return [*rows, input_row(x_name, x_action, lambda: _rotation_check(page, limits), replica)]


def _rotation_check(page: _Page, limits: _Limits) -> tuple[bool, str]:
    ok, outcome = _budget_check(page, limits, _rotating(limits, _RIGHT_ADDRESS), "rotated")
    # The proxy's entry is honoured: another one is another client with budgets of its own
    # (else the row would pass with the header ignored altogether).
    other = page.load({"X-Forwarded-For": _forwarded_entries(limits, _OTHER_ADDRESS, "1.1.1.1")})
    honoured = other.status_code == 200
    return ok and honoured, f"{outcome}; another proxy-written address: {other.status_code}"
