"""Signed ids: round trip, and each way a vote credential must fail (forged, other user,
expired, malformed, wrong kind); keyed user hash."""

from __future__ import annotations

import time

import pytest

from serving.security import IdSigner, TokenError, WebSessions, bearer, user_hash, verify

KEY = "k" * 32


def test_pair_token_round_trip_carries_order() -> None:
    signer = IdSigner(KEY, 60)
    token = signer.pair("pair-abc", [2, 0, 1], "user1")
    got = signer.verify_pair(token, "user1")
    assert (got.pair_id, got.shown_order) == ("pair-abc", [2, 0, 1])


def test_other_user_and_altered_tokens_are_refused() -> None:
    signer = IdSigner(KEY, 60)
    token = signer.pair("pair-abc", [1, 0], "user1")
    with pytest.raises(TokenError) as other:
        signer.verify_pair(token, "user2")
    assert other.value.reason == "forged"
    # Flipping the recorded order would swap a/b: the MAC must catch it.
    altered = token.replace(".10.", ".01.", 1)
    assert altered != token
    with pytest.raises(TokenError) as flipped:
        signer.verify_pair(altered, "user1")
    assert flipped.value.reason == "forged"
    with pytest.raises(TokenError) as other_key:
        IdSigner("x" * 32, 60).verify_pair(token, "user1")
    assert other_key.value.reason == "forged"


def test_expired_and_malformed() -> None:
    signer = IdSigner(KEY, 60)
    token = signer.pair("pair-abc", [0, 1], "u")
    assert signer.verify_pair(token, "u").pair_id == "pair-abc"
    with pytest.raises(TokenError) as late:
        verify(KEY, "pair", token, "u", 2, now=time.time() + 61)
    assert late.value.reason == "expired"
    for bad in ("", "nodots", "a.b.c.d.e.f", "a.b.notanumber.mac"):
        with pytest.raises(TokenError) as malformed:
            signer.verify_pair(bad, "u")
        assert malformed.value.reason == "malformed"


def test_kinds_do_not_cross() -> None:
    signer = IdSigner(KEY, 60)
    response = signer.response("resp-1", "pair-1", "u")
    with pytest.raises(TokenError):
        signer.verify_pair(response, "u")
    assert signer.verify_response(response, "u").pair_id == "pair-1"
    assert signer.verify_response(signer.response("resp-2", None, "u"), "u").pair_id is None


def test_web_sessions() -> None:
    sessions = WebSessions(KEY, 60)
    token = sessions.issue()
    pseudo = sessions.verify(token)
    assert pseudo is not None and pseudo.startswith("web:")
    assert sessions.verify(token) == pseudo
    assert WebSessions("y" * 32, 60).verify(token) is None
    # Alter the MAC's last two characters (to a value they cannot already have: a fixed
    # replacement such as "AA" left the token intact once in 4,096 runs).
    altered = token[:-2] + ("BB" if token.endswith("AA") else "AA")
    assert sessions.verify(altered) is None
    assert sessions.verify("not-a-web-token") is None


def test_user_hash_is_keyed_and_separates_keys_and_users() -> None:
    h = user_hash(KEY, "api", "alice")
    assert h == user_hash(KEY, "api", "alice") and len(h) == 64
    assert (
        len(
            {
                h,
                user_hash(KEY, "api", "bob"),
                user_hash(KEY, "api2", "alice"),
                user_hash("z" * 32, "api", "alice"),
            }
        )
        == 4
    )
    assert "api" not in h and "alice" not in h


def test_bearer_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None
    assert bearer("Bearer ") is None
