"""The client's address and scheme behind trusted proxies (X-Forwarded-For, X-Forwarded-Proto).

Replaces uvicorn's ``proxy_headers``: with ``forwarded_allow_ips="*"`` uvicorn believes the
*leftmost* X-Forwarded-For entry, which the client writes itself, so a client could rotate its
address at will and escape every per-address rate limit. Each proxy *appends* the address it
was connected from, so the entries a client cannot forge are the rightmost ones. Here:

- with a list of trusted proxies (addresses or networks), the entries are walked from the
  right, skipping trusted proxies; the first untrusted one is the client (as uvicorn does);
- with ``*`` (any peer is trusted: only the ingress can reach the pod), the client is the
  ``forwarded_trusted_hops``-th entry from the right (1: the ingress's own entry).

X-Forwarded-Proto of a trusted peer sets the request's scheme (``https`` behind a TLS-
terminating ingress), which decides the session cookie's ``Secure`` flag and HSTS
(``serving.routes.web``). A peer that is not trusted has both headers ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES = {"http", "https"}


def parse_trusted(value: str) -> list[IPNetwork] | None:
    """The trusted proxies of ``forwarded_allow_ips``; None for ``*`` (any peer); ValueError
    for an entry that is neither an address nor a network (uvicorn silently never matched it)."""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if "*" in entries:
        return None
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address, a network or *") from None
    return networks


def _host(entry: str) -> str:
    """An X-Forwarded-For entry without a port: ``1.2.3.4:5``, ``[::1]:5`` -> the address."""
    entry = entry.strip()
    if entry.startswith("["):
        return entry[1:].partition("]")[0]
    if entry.count(":") == 1:  # IPv4 with a port; bare IPv6 has several colons
        return entry.partition(":")[0]
    return entry


class ForwardedHeadersMiddleware:
    """ASGI middleware setting ``scope["client"]`` and ``scope["scheme"]`` from a trusted peer's
    X-Forwarded-For / X-Forwarded-Proto (see the module docstring for which entry counts)."""

    def __init__(self, app: Any, trusted: str, hops: int = 1) -> None:
        self.app = app
        self._trusted = parse_trusted(trusted)
        self._hops = max(1, hops)

    def is_trusted(self, host: str | None) -> bool:
        if self._trusted is None:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def client_host(self, entries: list[str]) -> str | None:
        """The client's address among the X-Forwarded-For entries (proxies appended right)."""
        hosts = [_host(e) for e in entries if e.strip()]
        if not hosts:
            return None
        if self._trusted is None:
            # Fewer entries than hops: no client-written entry is left, the leftmost is real.
            return hosts[-min(self._hops, len(hosts))]
        for host in reversed(hosts):
            if not self.is_trusted(host):
                return host
        return hosts[0]  # every hop trusted: the client is itself one of the proxies

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self.is_trusted(client[0] if client else None):
                self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: dict[str, Any]) -> None:
        forwarded_for: list[str] = []
        proto: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for += value.decode("latin-1").split(",")
            elif name == b"x-forwarded-proto":
                # The last proxy's word on the scheme it was reached by.
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
        host = self.client_host(forwarded_for)
        if host:
            scope["client"] = (host, 0)
        if proto in _SCHEMES:
            ws = scope["type"] == "websocket"
            scope["scheme"] = proto.replace("http", "ws") if ws else proto
