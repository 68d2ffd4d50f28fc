"""Plain values passed into and out of the training store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RawRecord:
    """One Kafka message as the consumer saw it (value undecoded)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True)
class PartitionPosition:
    """Where ingestion stands in one partition.

    ``epoch`` increases each time the saved offset was found outside what the broker holds
    (a memory-storage broker restarted) and ingestion restarted at ``epoch_start``: offsets of
    different epochs name different messages, so ranges are only comparable within an epoch.
    """

    topic: str
    partition: int
    next_offset: int
    epoch: int = 0
    epoch_start: int = 0
    # sha256 of the message at next_offset - 1 (None before the first message of an epoch).
    last_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "next_offset": self.next_offset,
            "epoch": self.epoch,
            "epoch_start": self.epoch_start,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> PartitionPosition:
        return PartitionPosition(
            data["topic"],
            int(data["partition"]),
            int(data["next_offset"]),
            int(data.get("epoch", 0)),
            int(data.get("epoch_start", 0)),
            data.get("last_digest"),
        )


@dataclass(frozen=True)
class Snapshot:
    """The store state a training cycle uses: every event with ``seq <= max_seq``, which is
    exactly the events consumed before ``positions``."""

    max_seq: int
    positions: tuple[PartitionPosition, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"max_seq": self.max_seq, "positions": [p.to_json() for p in self.positions]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Snapshot:
        return Snapshot(
            int(data["max_seq"]),
            tuple(PartitionPosition.from_json(p) for p in data.get("positions", [])),
        )


@dataclass
class BatchStats:
    """What one ingested batch did (also mirrored into Prometheus after commit)."""

    consumed: dict[tuple[str, str], int] = field(default_factory=dict)
    decode_errors: dict[str, int] = field(default_factory=dict)
    unknown_fields: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def bump(self, table: dict[Any, int], key: Any, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n
