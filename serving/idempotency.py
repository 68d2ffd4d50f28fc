"""What an ``Idempotency-Key`` was first used for, so a key reused with another body is a 409.

A retry of one ``POST /v1/feedback`` sends the same key and the same body and must become the
same event (``serving.feedback`` derives the event id from both). A key reused with a different
body is a client bug that would otherwise lose a vote silently: b, b, then a under one key all
answered 200 with the first event id, and the learner dropped the a as a duplicate. As Stripe's
API and the IETF draft "The Idempotency-Key HTTP Header Field" specify, the reuse is refused
with 409 instead.

Replicas share no state, so each remembers the keys it saw (bounded, expiring). A reused key
that reaches another replica is not refused there, but it is not lost either: its event id
differs from the first (the body is part of it), so the learner keeps it as the later vote.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from serving.errors import APIError


def body_fingerprint(body: dict[str, Any]) -> str:
    """A stable digest of a request body (key order and absent-vs-null do not matter)."""
    given = {k: v for k, v in body.items() if v is not None}
    canonical = json.dumps(given, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeys:
    """(user, key) -> fingerprint of the body the key was first used with, for ``ttl_seconds``,
    at most ``max_keys`` (the oldest forgotten first)."""

    def __init__(
        self, ttl_seconds: float, max_keys: int, clock: Callable[[], float] = time.monotonic
    ):
        self._ttl = ttl_seconds
        self._max = max_keys
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        # Sync routes run in a thread pool: check-and-record must be one step.
        self._lock = threading.Lock()

    def claim(self, user: str, key: str, fingerprint: str) -> None:
        """Record the key's first body, or raise 409 if it was first used with another one."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            first = self._seen.get((user, key))
            if first is not None and first[0] != fingerprint:
                raise APIError(
                    409,
                    "this Idempotency-Key was already used with a different request body: "
                    "send a new key for a new vote",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            if first is None:
                self._seen[(user, key)] = (fingerprint, now + self._ttl)
                if len(self._seen) > self._max:
                    self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order (one ttl for all), so expired keys are at the front.
        while self._seen:
            _, expires = next(iter(self._seen.values()))
            if expires > now:
                return
            self._seen.popitem(last=False)
