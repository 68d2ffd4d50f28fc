"""Kafka ingestion: manually assigned consumer -> decode -> training store (one transaction)."""

from learner.ingest.consumer import KafkaSource
from learner.ingest.ingestor import Ingestor

__all__ = ["Ingestor", "KafkaSource"]
