"""Credentials and signed ids: API keys, the admin token, web-page sessions, pair/response ids.

Signed ids (docs/architecture.md, "Feedback ids are signed"): every id the API hands
out is ``<payload fields>.<expiry>.<mac>`` where ``mac = HMAC-SHA256(hmac_key, kind | fields |
user_hash | expiry)`` truncated to 128 bits (RFC 2104; truncation as RFC 4868 section 2.6 allows).
The user hash is *not* in the token: a verifier recomputes it from the request's API key and
``user``, so a token only verifies for the user it was issued to, on any replica, with no
database. The kind tag keeps a response id from passing as a pair id or a web session.

Pair tokens also carry ``shown_order`` (one hex digit per answer) so the server can map the
client's "a"/"b" (API order) back to the canonical order of the ``pair.served`` event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

_MAC_BYTES = 16
_FIELD = re.compile(r"^[A-Za-z0-9_-]+$")


class TokenError(Exception):
    """A signed id failed verification; ``reason`` is one of malformed/forged/expired."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def user_hash(hmac_key: str, api_key: str, user: str | None) -> str:
    """Pseudonymous user id: HMAC(hmac_key, api_key + ":" + user), hex (COMMON contract)."""
    message = f"{api_key}:{user or ''}".encode()
    return hmac.new(hmac_key.encode(), message, hashlib.sha256).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def _mac(key: str, kind: str, fields: list[str], uhash: str, expiry: int) -> str:
    message = "|".join([kind, *fields, uhash, str(expiry)]).encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(key: str, kind: str, fields: list[str], uhash: str, expiry: int) -> str:
    for value in fields:
        if not _FIELD.match(value):
            raise ValueError(f"token field {value!r} has characters outside [A-Za-z0-9_-]")
    return ".".join([*fields, str(expiry), _mac(key, kind, fields, uhash, expiry)])


def verify(
    key: str, kind: str, token: str, uhash: str, n_fields: int, now: float | None = None
) -> list[str]:
    """The token's fields, or TokenError. The MAC is checked before the expiry."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != n_fields + 2 or not parts[-2].isdigit():
        raise TokenError("malformed", "the id is malformed")
    fields, expiry, mac = parts[:n_fields], int(parts[-2]), parts[-1]
    if not hmac.compare_digest(mac, _mac(key, kind, fields, uhash, expiry)):
        raise TokenError(
            "forged",
            "the id is not valid for this user (forged, altered, or "
            "issued to another user or API key)",
        )
    if expiry < (time.time() if now is None else now):
        raise TokenError("expired", "the id has expired; feedback is no longer accepted")
    return fields


@dataclass(frozen=True)
class PairToken:
    pair_id: str
    # shown_order[i] = canonical index of the answer returned as choices[i].
    shown_order: list[int]


@dataclass(frozen=True)
class ResponseToken:
    response_id: str
    pair_id: str | None


class IdSigner:
    """Issues and verifies the API's signed ids with one key and one time-to-live."""

    def __init__(self, key: str, ttl_seconds: int) -> None:
        self._key = key
        self._ttl = ttl_seconds

    def _expiry(self) -> int:
        return int(time.time()) + self._ttl

    def pair(self, pair_id: str, shown_order: list[int], uhash: str) -> str:
        order = "".join(format(i, "x") for i in shown_order)
        return sign(self._key, "pair", [pair_id, order], uhash, self._expiry())

    def verify_pair(self, token: str, uhash: str) -> PairToken:
        pair_id, order = verify(self._key, "pair", token, uhash, 2)
        return PairToken(pair_id, [int(c, 16) for c in order])

    def response(self, response_id: str, pair_id: str | None, uhash: str) -> str:
        return sign(self._key, "resp", [response_id, pair_id or "-"], uhash, self._expiry())

    def verify_response(self, token: str, uhash: str) -> ResponseToken:
        response_id, pair_id = verify(self._key, "resp", token, uhash, 2)
        return ResponseToken(response_id, None if pair_id == "-" else pair_id)


class WebSessions:
    """Short-lived session tokens the web page gets as an HttpOnly, SameSite=Strict cookie.

    A token is ``web.<session id>.<expiry>.<mac>``; it stands in for an API key on the page's
    chat and feedback requests only (the session id plays the key's part in the user hash), so
    each page load is its own pseudonymous user.
    """

    PREFIX = "web."
    COOKIE = "rlhf_session"

    def __init__(self, key: str, ttl_seconds: int) -> None:
        self._key = key
        self._ttl = ttl_seconds

    def issue(self) -> str:
        session = secrets.token_hex(16)
        expiry = int(time.time()) + self._ttl
        return self.PREFIX + sign(self._key, "web", [session], "", expiry)

    def verify(self, token: str) -> str | None:
        """The session's pseudo API key (``web:<session id>``), or None if not a valid token."""
        if not token.startswith(self.PREFIX):
            return None
        try:
            (session,) = verify(self._key, "web", token[len(self.PREFIX) :], "", 1)
        except TokenError:
            return None
        return f"web:{session}"


def constant_time_in(candidate: str, secrets_: list[str]) -> bool:
    """Whether ``candidate`` equals one of ``secrets_``, comparing every entry in full."""
    found = False
    for secret in secrets_:
        found |= hmac.compare_digest(candidate.encode(), secret.encode())
    return found


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
