"""A tiny feeder that assigns Kafka-like offsets, and stores, for the store tests (events:
``tests.events``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from learner.store import RawRecord, TrainingStore
from learner.store.records import BatchStats
from schemas.codec import encode_event

if TYPE_CHECKING:
    from learner.evaluate import EvalResult
from schemas.events import (
    EventBase,
)

INTERACTIONS, FEEDBACK = "rlhf.interactions", "rlhf.feedback"


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
