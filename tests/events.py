"""Every test's event builders: valid events of each kind, at fixed event times.

The store and canary tests build interactions and feedback with ``pair`` / ``single`` /
``pref`` / ``rating`` / ``correction`` (times from ``at``); the schema, codec and broker tests
use ``pair_served`` and ``one_of_each`` (one valid example of every kind).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.events import (
    AdapterPromoted,
    AdapterPublished,
    AdapterRolledBack,
    ChatMessage,
    EventBase,
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
    ResponseServed,
    SamplingParams,
    ServedResponse,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def served(rid: str, text: str, version: str = "base") -> ServedResponse:
    return ServedResponse(
        response_id=rid,
        text=text,
        adapter_version=version,
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=2,
        latency_seconds=0.1,
    )


def pair(
    pair_id: str = "p1", user: str = "u1", k: int = 2, prompt: str = "hi", t: float = 0.0
) -> PairServed:
    return PairServed(
        pair_id=pair_id,
        user_id=user,
        model="m",
        ts=at(t),
        messages=[ChatMessage(role="user", content=prompt)],
        responses=[served(f"{pair_id}-r{i}", f"answer {i} of {pair_id}") for i in range(k)],
        shown_order=list(range(k)),
        sampling=SamplingParams(max_tokens=8),
    )


def single(
    rid: str = "s1", user: str = "u1", prompt: str = "hello", t: float = 0.0
) -> ResponseServed:
    return ResponseServed(
        user_id=user,
        model="m",
        ts=at(t),
        messages=[ChatMessage(role="user", content=prompt)],
        response=served(rid, f"single {rid}"),
        sampling=SamplingParams(max_tokens=8),
    )


def pref(
    pair_id: str = "p1",
    user: str = "u1",
    choice: str | None = "a",
    ranking: list[str] | None = None,
    t: float = 1.0,
) -> FeedbackPreference:
    return FeedbackPreference(
        pair_id=pair_id, user_id=user, ts=at(t), choice=None if ranking else choice, ranking=ranking
    )


def rating(rid: str, user: str = "u1", value: str = "up", t: float = 1.0) -> FeedbackRating:
    return FeedbackRating(response_id=rid, user_id=user, rating=value, ts=at(t))


def correction(rid: str, text: str, user: str = "u1", t: float = 1.0) -> FeedbackCorrection:
    return FeedbackCorrection(response_id=rid, user_id=user, text=text, ts=at(t))


def ab_pair(pair_id: str, first: str, second: str, user: str = "u1", t: float = 0.0) -> PairServed:
    """A two-answer pair whose answers came from versions ``first`` and ``second``."""
    return PairServed(
        pair_id=pair_id,
        user_id=user,
        model="m",
        ts=at(t),
        messages=[ChatMessage(role="user", content=f"prompt of {pair_id}")],
        responses=[
            served(f"{pair_id}-r0", f"answer of {first}", first),
            served(f"{pair_id}-r1", f"answer of {second}", second),
        ],
        shown_order=[0, 1],
        sampling=SamplingParams(max_tokens=8),
    )


def pair_served(k: int = 2) -> PairServed:
    return PairServed(
        pair_id="pair-1",
        user_id="u" * 64,
        model="smollm2",
        messages=[ChatMessage(role="user", content="What is 2+2?")],
        responses=[served(f"r{i}", "Four.", "policy@v3") for i in range(k)],
        shown_order=list(reversed(range(k))),
        sampling=SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64, seed=7),
    )


def one_of_each() -> list[EventBase]:
    return [
        pair_served(),
        pair_served(k=4),
        ResponseServed(
            user_id="u1",
            model="m",
            messages=[ChatMessage(role="user", content="hi")],
            response=served("r9", "Four.", "policy@v3"),
            sampling=SamplingParams(max_tokens=8),
        ),
        FeedbackPreference(pair_id="pair-1", user_id="u1", choice="a"),
        FeedbackPreference(pair_id="pair-1", user_id="u1", choice="both_bad"),
        FeedbackPreference(pair_id="pair-1", user_id="u1", ranking=["r2", "r0", "r1", "r3"]),
        FeedbackRating(response_id="r0", pair_id="pair-1", user_id="u1", rating="down"),
        FeedbackCorrection(response_id="r0", user_id="u1", text="2+2 is 4."),
        AdapterPublished(
            model_name="policy",
            version="policy@v4",
            uri="/store/policy/v4",
            manifest_sha256="a" * 64,
        ),
        AdapterPromoted(model_name="policy", version="policy@v4", previous_version="policy@v3"),
        AdapterRolledBack(
            model_name="policy", from_version="policy@v4", to_version="policy@v3", reason="operator"
        ),
    ]
