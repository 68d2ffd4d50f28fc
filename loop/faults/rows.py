"""One row of the fault report per fault or abusive input, and the counts that decide it.

``EventTally`` compares three views of the same events:

- *served*: what the simulated users were answered and said (the ledger): one
  ``pair.served`` per answered pair, one ``response.served`` per answer served without a
  pair (its two answers came out identical), one ``feedback.*`` per accepted vote;
- *in Kafka*: distinct events (by ``event_id``) on the interactions and feedback topics;
  byte-identical re-sends of one event (the spool is at-least-once) are counted as ``resent``;
- *stored*: distinct events in the learner's training store.

``lost`` counts served items missing from Kafka plus Kafka events missing from the store;
``duplicated`` counts items that reached Kafka under more than one event id (one answer or vote
logged twice) plus events stored more than once. Both must be 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from loop.faults.ledger import Ledger, TopicRecord
from schemas.events import (
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
    ResponseServed,
)


@dataclass(frozen=True)
class EventTally:
    served: int
    in_kafka: int
    stored: int
    lost: int
    duplicated: int
    resent: int
    # A few of the items counted as lost or duplicated, to start a diagnosis from.
    examples: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.served > 0


@dataclass(frozen=True)
class FaultRow:
    group: str  # kafka, learner, adapter, spool, input, api, load
    name: str
    action: str  # what was done
    outcome: str  # what happened: statuses, versions, metrics
    passed: bool
    events: EventTally | None = None
    seconds: float = 0.0
    skipped: str = ""  # why the row could not run here (never counted as a pass)

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "SKIPPED"
        return "PASS" if self.passed else "FAIL"


def _item(record: TopicRecord) -> tuple[str, str]:
    event = record.event
    if isinstance(event, PairServed):
        return ("pair.served", event.pair_id)
    if isinstance(event, ResponseServed):
        return ("response.served", event.response.response_id)
    if isinstance(event, FeedbackPreference):
        return (event.kind, event.pair_id)
    if isinstance(event, FeedbackRating | FeedbackCorrection):
        return (event.kind, event.response_id)
    return ("unexpected", repr(event)[:80])


def tally(ledger: Ledger, records: Iterable[TopicRecord], stored_ids: Iterable[str]) -> EventTally:
    pairs, feedback = ledger.snapshot()
    served: Counter[tuple[str, str]] = Counter(("pair.served", p.pair_id) for p in pairs)
    served.update(feedback)
    served.update(("response.served", rid) for rid in ledger.unpaired_answers())
    first: dict[str, TopicRecord] = {}
    copies = 0
    for record in records:
        event = record.event
        key = event.event_id if event is not None else f"undecodable:{record.offset}"
        if key in first:
            copies += 1
        else:
            first[key] = record
    in_kafka: Counter[tuple[str, str]] = Counter(_item(r) for r in first.values())
    stored_list = list(stored_ids)
    stored = set(stored_list)
    missing, extra, unstored = served - in_kafka, in_kafka - served, set(first) - stored
    lost = sum(missing.values()) + len(unstored)
    duplicated = sum(extra.values()) + (len(stored_list) - len(stored))
    examples = (
        [f"not in Kafka: {k}" for k in list(missing)[:3]]
        + [f"not stored: {e}" for e in sorted(unstored)[:3]]
        + [f"in Kafka, not served: {k}" for k in list(extra)[:3]]
    )
    return EventTally(
        served=sum(served.values()),
        in_kafka=len(first),
        stored=len(set(first) & stored),
        lost=lost,
        duplicated=duplicated,
        resent=copies,
        examples=tuple(examples),
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[FaultRow]) -> str:
    lines = [
        "| group | fault / input | what was done | served | stored | lost | duplicated "
        "| outcome | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ev = row.events
        counts = (
            [str(ev.served), str(ev.stored), str(ev.lost), str(ev.duplicated)] if ev else ["-"] * 4
        )
        outcome = row.outcome if not row.skipped else f"not run: {row.skipped}"
        lines.append(
            "| "
            + " | ".join(
                [row.group, row.name, _cell(row.action), *counts, _cell(outcome), row.verdict]
            )
            + " |"
        )
    return "\n".join(lines)
