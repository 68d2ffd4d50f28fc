"""The client address and scheme behind proxies (``serving.forwarded``): only entries a trusted
proxy appended to X-Forwarded-For count, never the client-written ones on the left."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serving.forwarded import ForwardedHeadersMiddleware
from tests.support.serving import harness, make_settings


def _client(trusted: str, forwarded_for: str, hops: int = 1) -> str | None:
    return ForwardedHeadersMiddleware(None, trusted, hops).client_host(forwarded_for.split(","))


def test_any_peer_trusted_takes_the_ingress_entry_not_the_clients() -> None:
    assert _client("*", "6.6.6.6, 198.51.100.7") == "198.51.100.7"
    assert _client("*", "198.51.100.7") == "198.51.100.7"
    # Two proxies (say a CDN, then the ingress), each appending the address it saw.
    assert _client("*", "6.6.6.6, 198.51.100.7, 10.0.0.5", hops=2) == "198.51.100.7"
    assert _client("*", "198.51.100.7", hops=2) == "198.51.100.7"  # short chain: no forgery


def test_listed_proxies_are_skipped_from_the_right() -> None:
    trusted = "10.0.0.0/8, 192.0.2.1"
    assert _client(trusted, "6.6.6.6, 198.51.100.7, 10.1.2.3, 192.0.2.1") == "198.51.100.7"
    assert _client(trusted, "10.1.2.3, 192.0.2.1") == "10.1.2.3"  # all trusted: leftmost
    assert _client(trusted, "6.6.6.6, 198.51.100.7:4711") == "198.51.100.7"
    assert _client(trusted, "6.6.6.6, [2001:db8::7]:443") == "2001:db8::7"
    assert _client(trusted, " , ") is None


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["seen"] = (scope["client"], scope["scheme"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("trusted", "peer", "seen"),
    [
        ("*", "10.0.0.5", (("198.51.100.7", 0), "https")),
        ("10.0.0.0/8", "10.0.0.5", (("198.51.100.7", 0), "https")),
        # An untrusted peer's headers are its own words: ignored.
        ("10.0.0.0/8", "6.6.6.6", (("6.6.6.6", 1234), "http")),
        ("127.0.0.1", "6.6.6.6", (("6.6.6.6", 1234), "http")),
    ],
)
async def test_only_a_trusted_peer_sets_client_and_scheme(
    trusted: str, peer: str, seen: tuple[Any, str]
) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "client": (peer, 1234),
        "scheme": "http",
        "headers": [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-for", b"198.51.100.7"),
            (b"x-forwarded-proto", b"https"),
        ],
    }
    await ForwardedHeadersMiddleware(_echo, trusted)(scope, None, None)
    assert scope["seen"] == seen


@pytest.mark.parametrize("value", ["10.0.0.0/33", "ingress-nginx", "10.0.0.1, nope"])
def test_a_malformed_trusted_proxy_stops_start_up(value: str) -> None:
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        make_settings(forwarded_allow_ips=value)


@pytest.mark.anyio
async def test_rotating_the_client_written_part_does_not_escape_the_session_limit() -> None:
    settings = make_settings(
        forwarded_allow_ips="*", web_sessions_per_minute=6, rate_limit_burst_seconds=30
    )  # 3 sessions at once per address
    async with harness(settings) as h:

        async def load(forwarded_for: str) -> int:
            page = await h.http.get("/", headers={"X-Forwarded-For": forwarded_for})
            return page.status_code

        rotated = [await load(f"203.0.113.{i}, 198.51.100.7") for i in range(6)]
        assert rotated == [200, 200, 200, 429, 429, 429]
        # The ingress's entry is the address: another one is another client.
        assert await load("203.0.113.1, 198.51.100.8") == 200
