"""Durable training store (SQLite): joined comparisons, ratings, corrections, and the consumer
offsets, written in the same transaction as the events they cover (docs/architecture.md,
"The learner owns its offsets")."""

from learner.store.db import TrainingStore
from learner.store.records import RawRecord, Snapshot

__all__ = ["RawRecord", "Snapshot", "TrainingStore"]
