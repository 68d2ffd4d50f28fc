"""Valid example events, one per kind, for schema tests."""

from __future__ import annotations

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


def served(response_id: str, text: str = "Four.") -> ServedResponse:
    return ServedResponse(
        response_id=response_id,
        text=text,
        adapter_version="policy@v3",
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=3,
        latency_seconds=0.25,
    )


def pair_served(k: int = 2) -> PairServed:
    return PairServed(
        pair_id="pair-1",
        user_id="u" * 64,
        model="smollm2",
        messages=[ChatMessage(role="user", content="What is 2+2?")],
        responses=[served(f"r{i}") for i in range(k)],
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
            response=served("r9"),
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
