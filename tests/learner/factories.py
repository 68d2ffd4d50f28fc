"""Event builders and a tiny feeder that assigns Kafka-like offsets, for the store tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from learner.store import RawRecord, TrainingStore
from learner.store.records import BatchStats
from schemas.codec import encode_event

if TYPE_CHECKING:
    from learner.evaluate import EvalResult
from schemas.events import (
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
INTERACTIONS, FEEDBACK = "rlhf.interactions", "rlhf.feedback"


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


class Feeder:
    """Appends events to per-topic logs (offsets 0, 1, ...) and ingests them as Kafka would."""

    def __init__(self, store: TrainingStore) -> None:
        self.store = store
        self.next = {INTERACTIONS: 0, FEEDBACK: 0}

    def record(self, value: EventBase | bytes, topic: str | None = None) -> RawRecord:
        if topic is None:
            assert isinstance(value, EventBase)
            topic = FEEDBACK if value.kind.startswith(("feedback", "user")) else INTERACTIONS
        raw = value if isinstance(value, bytes) else encode_event(value)
        rec = RawRecord(topic, 0, self.next[topic], raw)
        self.next[topic] += 1
        return rec

    def feed(self, *values: EventBase | bytes) -> BatchStats:
        return self.store.ingest_batch([self.record(v) for v in values])

    def feed_raw(self, topic: str, *raws: bytes) -> BatchStats:
        return self.store.ingest_batch([self.record(r, topic) for r in raws])


def raw_json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def new_store(tmp_path: Path, window: float = 3600.0) -> TrainingStore:
    return TrainingStore(tmp_path / "store.sqlite", window)


def eval_result(gain_low: float = 0.0, gain_high: float = 0.0) -> EvalResult:
    """A neutral evaluation result (no gain, no KL, sanity passed) for tests of its users."""
    from learner.evaluate import EvalResult  # torch: only for the tests that need it

    return EvalResult(
        reward_policy=0.0,
        reward_reference=0.0,
        reward_gain=0.0,
        reward_gain_low=gain_low,
        reward_gain_high=gain_high,
        win_rate=0.5,
        kl=0.0,
        length_mean=0.0,
        length_min=0.0,
        length_max=0.0,
        reference_length_mean=0.0,
        sanity_passed=True,
    )


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
