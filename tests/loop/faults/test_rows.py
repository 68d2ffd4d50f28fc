"""The fault report's event tally: what users were served and said against Kafka and the store."""

from __future__ import annotations

import pytest

from loop.client import Answer, ChatResult
from loop.faults.ledger import Ledger, TopicRecord
from loop.faults.rows import tally
from schemas.codec import encode_event
from schemas.events import EventBase
from tests.events import pair, pref, single

pytestmark = pytest.mark.unit


def records(*events: EventBase) -> list[TopicRecord]:
    return [TopicRecord("t", 0, i, encode_event(e)) for i, e in enumerate(events)]


def answer(rid: str) -> Answer:
    return Answer(
        text="same", response_id=f"{rid}.signature", adapter_version="base", finish_reason="stop"
    )


def test_served_pairs_unpaired_answers_and_votes_all_accounted_for() -> None:
    ledger = Ledger()
    ledger.served(ChatResult("p1.sig", [answer("p1-r0"), answer("p1-r1")], 4))
    # A pair whose answers came out identical is served unpaired: two plain answers.
    ledger.served(ChatResult(None, [answer("s1"), answer("s2")], 4))
    ledger.said({"pair_id": "p1.sig", "choice": "a"})
    events = [pair("p1"), single("s1"), single("s2"), pref("p1")]
    counted = tally(ledger, records(*events), [e.event_id for e in events])
    assert (counted.served, counted.lost, counted.duplicated) == (4, 0, 0)
    assert counted.examples == ()


def test_an_answer_logged_that_nobody_was_served_is_a_duplicate_and_named() -> None:
    ledger = Ledger()
    ledger.served(ChatResult("p1.sig", [answer("p1-r0"), answer("p1-r1")], 4))
    extra = pair("p2")
    events = [pair("p1"), extra]
    counted = tally(ledger, records(*events), [e.event_id for e in events])
    assert (counted.lost, counted.duplicated) == (0, 1)
    assert counted.examples == ("in Kafka, not served: ('pair.served', 'p2')",)
    # And a served pair that never reached Kafka is lost.
    ledger.served(ChatResult("p3.sig", [answer("p3-r0"), answer("p3-r1")], 4))
    counted = tally(ledger, records(*events), [e.event_id for e in events])
    assert counted.lost == 1 and "not in Kafka: ('pair.served', 'p3')" in counted.examples
