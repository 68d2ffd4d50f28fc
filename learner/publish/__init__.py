"""Adapter publishing: versioned adapter store (local dir or fsspec URL), manifest, Kafka event."""

from learner.publish.announce import announce_published
from learner.publish.manifest import build_manifest, code_revision
from learner.publish.store import AdapterStore, VersionExistsError

__all__ = [
    "AdapterStore",
    "VersionExistsError",
    "announce_published",
    "build_manifest",
    "code_revision",
]
