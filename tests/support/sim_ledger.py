"""Moved to :mod:`loop.faults.ledger` (the fault suite's benchmark uses it too)."""

from loop.faults.ledger import (
    Ledger,
    RecordingClient,
    RecordingSimulator,
    ServedPair,
    TopicRecord,
    plain_id,
    read_all,
)

__all__ = [
    "Ledger",
    "RecordingClient",
    "RecordingSimulator",
    "ServedPair",
    "TopicRecord",
    "plain_id",
    "read_all",
]
