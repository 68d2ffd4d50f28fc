"""Wire contracts shared by serving and learner: Kafka events, adapter manifest, topic names.

This package depends on nothing of ours (docs/architecture.md). Every model here is versioned by
``SCHEMA_VERSION``; producers build models strictly (unknown fields rejected), consumers decode
with :func:`schemas.codec.decode_event`, which tolerates and counts unknown fields.
"""

from schemas.codec import DecodeError, DecodeResult, decode_event, encode_event
from schemas.events import (
    SCHEMA_VERSION,
    AdapterPromoted,
    AdapterPublished,
    AdapterRolledBack,
    ChatMessage,
    Event,
    FeedbackCorrection,
    FeedbackPreference,
    FeedbackRating,
    PairServed,
    ResponseServed,
    SamplingParams,
    ServedResponse,
)
from schemas.manifest import AdapterManifest, OffsetRange
from schemas.topics import DEFAULT_TOPICS, Topics

__all__ = [
    "DEFAULT_TOPICS",
    "SCHEMA_VERSION",
    "AdapterManifest",
    "AdapterPromoted",
    "AdapterPublished",
    "AdapterRolledBack",
    "ChatMessage",
    "DecodeError",
    "DecodeResult",
    "Event",
    "FeedbackCorrection",
    "FeedbackPreference",
    "FeedbackRating",
    "OffsetRange",
    "PairServed",
    "ResponseServed",
    "SamplingParams",
    "ServedResponse",
    "Topics",
    "decode_event",
    "encode_event",
]
