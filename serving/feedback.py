"""Feedback handler: verify the signed ids, map API order to canonical order, emit the event.

Only the user a pair was served to can vote on it: the ids are HMAC-signed over (id, user hash,
expiry) (``serving.security``), so any replica checks a vote without shared state.

Every vote is its own event with a fresh ``event_id``, so a vote changed back (a, b, a) is three
events and the learner keeps the last per (pair, user). A client that may retry a request sends
an ``Idempotency-Key`` header: the event id is then derived from (kind, target id, user, key,
body), so the retry yields the same ``event_id`` and the learner's dedup makes it count once. The
key alone must not decide the id: a vote changed back under one key (a, b, a) would collide with
the first one and be lost. A key reused with another body is a 409 (``serving.idempotency``).
"""

from __future__ import annotations

import hashlib

from schemas.events import (
    EventBase,
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    new_event_id,
)
from serving import metrics
from serving.api_models import FeedbackRequest, FeedbackResponse
from serving.deps import Caller, Services
from serving.errors import APIError
from serving.idempotency import body_fingerprint
from serving.security import PairToken, ResponseToken, TokenError

_STATUS = {"malformed": 400, "forged": 403, "expired": 410}


def feedback_event_id(kind: str, target: str, user_hash: str, idempotency_key: str | None) -> str:
    """Same key, same id (a retry); no key, a new id (each request is a vote of its own)."""
    if idempotency_key is None:
        return new_event_id()
    message = f"{kind}|{target}|{user_hash}|{idempotency_key}"
    return hashlib.sha256(message.encode()).hexdigest()[:32]


def _reject(exc: TokenError, param: str) -> APIError:
    metrics.FEEDBACK_REJECTED.labels(exc.reason).inc()
    return APIError(_STATUS[exc.reason], f"{param}: {exc}", param=param, code=f"{exc.reason}_id")


def _pair(services: Services, token: str, user_hash: str) -> PairToken:
    try:
        return services.signer.verify_pair(token, user_hash)
    except TokenError as exc:
        raise _reject(exc, "pair_id") from None


def _response(services: Services, token: str, user_hash: str, param: str) -> ResponseToken:
    try:
        return services.signer.verify_response(token, user_hash)
    except TokenError as exc:
        raise _reject(exc, param) from None


def _preference(
    services: Services, body: FeedbackRequest, user_hash: str, key: str | None
) -> FeedbackPreference:
    pair = _pair(services, body.pair_id or "", user_hash)
    k = len(pair.shown_order)
    if body.choice is not None:
        if k != 2:
            # Well-formed, but not what this pair takes: a conflict with the pair, like 409s
            # elsewhere, so a schema-valid body is never a 400.
            raise APIError(
                409,
                f"this comparison has {k} answers: send a ranking, not a choice",
                param="choice",
                code="ranking_required",
            )
        choice = body.choice
        if choice in ("a", "b"):
            # API position -> canonical index -> canonical letter of the pair.served event.
            shown = 0 if choice == "a" else 1
            choice = "ab"[pair.shown_order[shown]]  # type: ignore[assignment]
        return FeedbackPreference(
            event_id=feedback_event_id("preference", pair.pair_id, user_hash, key),
            pair_id=pair.pair_id,
            user_id=user_hash,
            choice=choice,
        )
    ranking = [_response(services, t, user_hash, "ranking") for t in body.ranking or []]
    ids = [r.response_id for r in ranking]
    if any(r.pair_id != pair.pair_id for r in ranking) or len(set(ids)) != k or len(ids) != k:
        raise APIError(
            409,
            f"ranking must list each of the pair's {k} response ids once",
            param="ranking",
            code="invalid_ranking",
        )
    return FeedbackPreference(
        event_id=feedback_event_id("preference", pair.pair_id, user_hash, key),
        pair_id=pair.pair_id,
        user_id=user_hash,
        ranking=ids,
    )


def _single(
    services: Services, body: FeedbackRequest, user_hash: str, key: str | None
) -> EventBase:
    target = _response(services, body.response_id or "", user_hash, "response_id")
    if body.rating is not None:
        return FeedbackRating(
            event_id=feedback_event_id("rating", target.response_id, user_hash, key),
            response_id=target.response_id,
            pair_id=target.pair_id,
            user_id=user_hash,
            rating=body.rating,
        )
    return FeedbackCorrection(
        event_id=feedback_event_id("correction", target.response_id, user_hash, key),
        response_id=target.response_id,
        pair_id=target.pair_id,
        user_id=user_hash,
        text=body.correction or "",
    )


def record_feedback(
    services: Services, body: FeedbackRequest, caller: Caller, idempotency_key: str | None = None
) -> FeedbackResponse:
    """Emit the vote. ``idempotency_key`` (the request's header) makes a retry the same event."""
    user_hash = services.user_hash(caller.api_key, body.user)
    retry_key = None
    if idempotency_key is not None:
        fingerprint = body_fingerprint(body.model_dump())
        retry_key = f"{idempotency_key}|{fingerprint}"
    if body.kind() == "preference":
        event: EventBase = _preference(services, body, user_hash, retry_key)
    else:
        event = _single(services, body, user_hash, retry_key)
    if idempotency_key is not None:
        # After the ids are verified: a refused request does not claim the key.
        services.idempotency.claim(user_hash, idempotency_key, fingerprint)
    services.events.emit(event)
    value = body.choice or body.rating or ("ranking" if body.ranking else "text")
    metrics.FEEDBACK.labels(body.kind(), value).inc()
    return FeedbackResponse(event_id=event.event_id, kind=event.kind)
