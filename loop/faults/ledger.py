"""What simulated users were served and said, id by id, and what a topic holds, event by event.

``RecordingSimulator`` is ``loop.sim.Simulator`` with a client that writes down every answered
chat (pair id, response ids, adapter version of each answer) and every *accepted* feedback post
(kind and the id it refers to). The ids the API hands out are signed tokens whose first field is
the plain id the events carry (``serving.security``: ``<id>.<more fields>.<expiry>.<mac>``), so
the ledger can be compared with the ``pair.served`` / ``feedback.*`` events in Kafka exactly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from kafka import KafkaConsumer, TopicPartition

from loop.client import ChatResult, ServiceClient
from loop.sim import SimConfig, SimStats, Simulator
from schemas.codec import decode_event
from schemas.events import EventBase


def plain_id(token: str) -> str:
    """The id inside a signed pair/response token."""
    return token.split(".", 1)[0]


@dataclass(frozen=True)
class ServedPair:
    pair_id: str
    answers: tuple[tuple[str, str], ...]  # (response id, adapter version) in the order shown
    at: float  # time.monotonic() when the answer arrived


@dataclass
class Ledger:
    pairs: list[ServedPair] = field(default_factory=list)
    feedback: list[tuple[str, str]] = field(default_factory=list)  # (event kind, referenced id)
    latencies: list[float] = field(default_factory=list)  # seconds per answered chat request
    # Answers served without a pair (a pair whose answers came out identical): response ids.
    unpaired: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def served(self, result: ChatResult) -> None:
        if result.pair_token is None:
            with self._lock:
                self.unpaired += [plain_id(a.response_id or "") for a in result.answers]
            return
        answers = tuple(
            (plain_id(a.response_id or ""), a.adapter_version or "?") for a in result.answers
        )
        with self._lock:
            self.pairs.append(ServedPair(plain_id(result.pair_token), answers, time.monotonic()))

    def said(self, body: dict[str, Any]) -> None:
        if "pair_id" in body:
            entry = ("feedback.preference", plain_id(body["pair_id"]))
        elif "rating" in body:
            entry = ("feedback.rating", plain_id(body["response_id"]))
        else:
            entry = ("feedback.correction", plain_id(body["response_id"]))
        with self._lock:
            self.feedback.append(entry)

    def snapshot(self) -> tuple[list[ServedPair], list[tuple[str, str]]]:
        with self._lock:
            return list(self.pairs), list(self.feedback)

    def unpaired_answers(self) -> list[str]:
        with self._lock:
            return list(self.unpaired)

    def voted_pairs(self) -> int:
        with self._lock:
            return sum(1 for kind, _ in self.feedback if kind == "feedback.preference")

    def versions_since(self, since: float) -> set[str]:
        with self._lock:
            return {v for p in self.pairs if p.at >= since for _, v in p.answers}


class RecordingClient(ServiceClient):
    def __init__(self, base_url: str, api_key: str, ledger: Ledger, max_retries: int = 3) -> None:
        super().__init__(base_url, api_key, max_retries=max_retries)
        self.ledger = ledger

    async def chat(self, prompt: str, **kwargs: Any) -> ChatResult:
        t0 = time.perf_counter()
        result = await super().chat(prompt, **kwargs)
        self.ledger.latencies.append(time.perf_counter() - t0)
        self.ledger.served(result)
        return result

    async def feedback(self, body: dict[str, Any]) -> httpx.Response:
        resp = await super().feedback(body)
        if resp.is_success:
            self.ledger.said(body)
        return resp


class RecordingSimulator(Simulator):
    def __init__(self, config: SimConfig, ledger: Ledger, stats: SimStats | None = None) -> None:
        super().__init__(config, stats=stats)
        self.ledger = ledger

    def make_client(self) -> ServiceClient:
        return RecordingClient(
            self.config.base_url, self.config.api_key, self.ledger, self.config.client_retries
        )


@dataclass(frozen=True)
class TopicRecord:
    topic: str
    partition: int
    offset: int
    value: bytes

    @property
    def event(self) -> EventBase | None:
        return decode_event(self.value).event


def read_all(
    bootstrap: str, topics: list[str], at_least: int = 0, timeout: float = 60.0
) -> list[TopicRecord]:
    """Every record of ``topics`` from the beginning: polls until ``at_least`` arrived and then
    until a poll brings nothing more (Tansu's end offsets are not the high watermark)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=1000)
            for tp, msgs in batches.items():
                out += [TopicRecord(tp.topic, tp.partition, m.offset, m.value) for m in msgs]
            if not batches and len(out) >= at_least:
                break
        return sorted(out, key=lambda r: (r.topic, r.partition, r.offset))
    finally:
        consumer.close()
