from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas import (
    SCHEMA_VERSION,
    ChatMessage,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
    decode_event,
    encode_event,
)
from schemas.topics import DEFAULT_TOPICS
from tests.events import one_of_each, pair_served, served


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.kind)
def test_every_kind_round_trips(event):
    result = decode_event(encode_event(event))
    assert result.ok, result.error
    assert result.event == event
    assert result.unknown_fields == []
    assert type(result.event) is type(event)


def test_events_carry_version_unique_id_and_utc_time():
    a, b = pair_served(), pair_served()
    assert a.schema_version == SCHEMA_VERSION
    assert a.event_id != b.event_id
    assert a.ts.utcoffset() == timedelta(0)


def test_non_utc_timestamp_is_normalised_and_naive_refused():
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    event = FeedbackRating(response_id="r", user_id="u", rating="up", ts=plus_two)
    assert event.ts == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert event.ts.tzinfo == UTC
    with pytest.raises(ValidationError):
        FeedbackRating(response_id="r", user_id="u", rating="up", ts=datetime(2026, 1, 1))


def test_producer_side_rejects_unknown_fields():
    with pytest.raises(ValidationError, match="Extra inputs"):
        FeedbackRating(response_id="r", user_id="u", rating="up", text="trust me")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # neither choice nor ranking
        {"choice": "a", "ranking": ["r0", "r1"]},  # both
        {"ranking": ["r0"]},  # too short
        {"ranking": ["r0", "r0"]},  # repeats
        {"choice": "c"},  # not a choice
    ],
)
def test_preference_needs_exactly_one_valid_choice_or_ranking(kwargs):
    with pytest.raises(ValidationError):
        FeedbackPreference(pair_id="p", user_id="u", **kwargs)


def test_pair_needs_permutation_order_and_unique_ids():
    good = pair_served()
    with pytest.raises(ValidationError, match="permutation"):
        PairServed(**{**good.model_dump(), "shown_order": [0, 0]})
    with pytest.raises(ValidationError, match="unique"):
        PairServed(
            **{**good.model_dump(), "responses": [served("r0", "Four."), served("r0", "Four.")]}
        )
    with pytest.raises(ValidationError):
        PairServed(
            **{**good.model_dump(), "responses": [served("r0", "Four.")], "shown_order": [0]}
        )


def test_chat_message_role_is_checked():
    with pytest.raises(ValidationError):
        ChatMessage.model_validate({"role": "root", "content": "x"})


def test_keys_follow_the_topic_table():
    pair = pair_served()
    assert pair.key() == "pair-1"
    assert FeedbackRating(response_id="r", user_id="u", rating="up").key() == "r"
    for event in one_of_each():
        assert DEFAULT_TOPICS.for_kind(event.kind) in DEFAULT_TOPICS.all()
    assert DEFAULT_TOPICS.for_kind("pair.served") == "rlhf.interactions"
    assert DEFAULT_TOPICS.for_kind("feedback.rating") == "rlhf.feedback"
    assert DEFAULT_TOPICS.for_kind("adapter.promoted") == "rlhf.adapters"
    with pytest.raises(ValueError):
        DEFAULT_TOPICS.for_kind("telemetry.ping")


def test_encoded_form_is_plain_json_with_kind():
    data = json.loads(encode_event(pair_served()))
    assert data["kind"] == "pair.served"
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["ts"].endswith("Z")
