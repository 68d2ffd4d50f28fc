"""Feedback handler: verify the signed ids, map API order to canonical order, emit the event.

Only the user a pair was served to can vote on it: the ids are HMAC-signed over (id, user hash,
expiry) (``serving.security``), so any replica checks a vote without shared state. Event ids
are derived from (kind, target id, user, value), so the same vote sent twice yields the same
``event_id`` and the learner's dedup makes it count once; a changed vote is a new event (the
learner keeps the last per (pair, user)).
"""

from __future__ import annotations

import hashlib

from schemas.events import EventBase, FeedbackCorrection, FeedbackPreference, FeedbackRating
from serving import metrics
from serving.deps import Caller, Services
from serving.errors import APIError
from serving.protocol import FeedbackRequest, FeedbackResponse
from serving.security import PairToken, ResponseToken, TokenError

_STATUS = {"malformed": 400, "forged": 403, "expired": 410}


def feedback_event_id(kind: str, target: str, uhash: str, value: str) -> str:
    return hashlib.sha256(f"{kind}|{target}|{uhash}|{value}".encode()).hexdigest()[:32]


def _reject(exc: TokenError, param: str) -> APIError:
    metrics.FEEDBACK_REJECTED.labels(exc.reason).inc()
    return APIError(_STATUS[exc.reason], f"{param}: {exc}", param=param, code=f"{exc.reason}_id")


def _pair(services: Services, token: str, uhash: str) -> PairToken:
    try:
        return services.signer.verify_pair(token, uhash)
    except TokenError as exc:
        raise _reject(exc, "pair_id") from None


def _response(services: Services, token: str, uhash: str, param: str) -> ResponseToken:
    try:
        return services.signer.verify_response(token, uhash)
    except TokenError as exc:
        raise _reject(exc, param) from None


def _preference(services: Services, body: FeedbackRequest, uhash: str) -> FeedbackPreference:
    pair = _pair(services, body.pair_id or "", uhash)
    k = len(pair.shown_order)
    if body.choice is not None:
        if k != 2:
            raise APIError(
                400,
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
            event_id=feedback_event_id("preference", pair.pair_id, uhash, choice),
            pair_id=pair.pair_id,
            user_id=uhash,
            choice=choice,
        )
    ranking = [_response(services, t, uhash, "ranking") for t in body.ranking or []]
    ids = [r.response_id for r in ranking]
    if any(r.pair_id != pair.pair_id for r in ranking) or len(set(ids)) != k or len(ids) != k:
        raise APIError(
            400,
            f"ranking must list each of the pair's {k} response ids once",
            param="ranking",
            code="invalid_ranking",
        )
    return FeedbackPreference(
        event_id=feedback_event_id("preference", pair.pair_id, uhash, ",".join(ids)),
        pair_id=pair.pair_id,
        user_id=uhash,
        ranking=ids,
    )


def _single(services: Services, body: FeedbackRequest, uhash: str) -> EventBase:
    target = _response(services, body.response_id or "", uhash, "response_id")
    if body.rating is not None:
        return FeedbackRating(
            event_id=feedback_event_id("rating", target.response_id, uhash, body.rating),
            response_id=target.response_id,
            pair_id=target.pair_id,
            user_id=uhash,
            rating=body.rating,
        )
    text = body.correction or ""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return FeedbackCorrection(
        event_id=feedback_event_id("correction", target.response_id, uhash, digest),
        response_id=target.response_id,
        pair_id=target.pair_id,
        user_id=uhash,
        text=text,
    )


def record_feedback(services: Services, body: FeedbackRequest, caller: Caller) -> FeedbackResponse:
    uhash = services.user_hash(caller.api_key, body.user)
    if body.kind() == "preference":
        event: EventBase = _preference(services, body, uhash)
    else:
        event = _single(services, body, uhash)
    services.events.emit(event)
    value = body.choice or body.rating or ("ranking" if body.ranking else "text")
    metrics.FEEDBACK.labels(body.kind(), value).inc()
    return FeedbackResponse(event_id=event.event_id, kind=event.kind)
