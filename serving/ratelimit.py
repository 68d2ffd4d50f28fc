"""Request rate limits: token buckets per API key, per web session and per client address.

Web sessions cost nothing to open, so the page's chat and feedback are counted twice: per
session, and against a budget all sessions of one client address share (else limits per
session multiply with page loads). New sessions are limited per address too. An IPv6 client
is counted per /64 (the block one subscriber is typically given), not per address.

A bucket refills at ``per_minute / 60`` tokens a second up to ``burst`` tokens; a request takes
one token or is refused with the seconds until one is back (the 429's ``Retry-After``). Buckets
live in this replica's memory: with R replicas behind a load balancer a client gets up to R
times a limit, which is what keeping every replica free of shared state costs. The number of
buckets is bounded (least recently used go first, coming back full), so a flood of new keys
cannot grow memory without bound.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from serving.errors import APIError
from serving.settings import ServingSettings

MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets by key; ``per_minute <= 0`` means no limit."""

    def __init__(
        self,
        per_minute: float,
        burst_seconds: float,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = per_minute / 60.0
        # At least one request must fit, or a slow limit would refuse everything.
        self._burst = max(1.0, self._rate * burst_seconds)
        self._max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 if the request may go ahead (a token is taken), else seconds until one is back."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        self._buckets[key] = bucket  # most recently used last
        if len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def refund(self, key: str) -> None:
        """Give back the token ``take`` took, for a request another limit then refused."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self._burst, bucket.tokens + 1.0)


def address_key(address: str) -> str:
    """What per-address limits count by: the address, or its /64 for IPv6 (one subscriber
    gets a whole /64, so per-address buckets would let it rotate through 2**64 of them)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class RateLimits:
    """The service's limits: chat and feedback per credential and (web) per address, web
    sessions per address."""

    def __init__(self, settings: ServingSettings, clock: Callable[[], float] = time.monotonic):
        burst = settings.rate_limit_burst_seconds

        def limiter(per_minute: float) -> RateLimiter:
            return RateLimiter(per_minute, burst, clock=clock)

        self._limiters = {
            ("chat", False): limiter(settings.key_chat_per_minute),
            ("feedback", False): limiter(settings.key_feedback_per_minute),
            ("chat", True): limiter(settings.web_chat_per_minute),
            ("feedback", True): limiter(settings.web_feedback_per_minute),
        }
        self._web_address = {
            "chat": limiter(settings.web_address_chat_per_minute),
            "feedback": limiter(settings.web_address_feedback_per_minute),
        }
        self._sessions = limiter(settings.web_sessions_per_minute)

    def check(self, route: str, web: bool, key: str, address: str) -> None:
        """Take one ``route`` request ("chat"/"feedback") of credential ``key`` (and, for a web
        session, of client ``address``), or raise 429."""
        limiter = self._limiters[(route, web)]
        wait = limiter.take(key)
        if wait:
            who = "web session" if web else "API key"
            raise _too_many(f"too many {route} requests for this {who}", wait)
        if not web:
            return
        wait = self._web_address[route].take(address_key(address))
        if wait:
            limiter.refund(key)  # the session's own budget is not spent on a refused request
            raise _too_many(f"too many web-page {route} requests from this address", wait)

    def check_new_session(self, address: str) -> None:
        """Take one web session issued to client ``address``, or raise 429."""
        wait = self._sessions.take(address_key(address))
        if wait:
            raise _too_many("too many new web sessions from this address", wait)


def _too_many(message: str, wait: float) -> APIError:
    seconds = max(1, math.ceil(wait))
    return APIError(
        429,
        f"{message}; retry in {seconds} s",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )
