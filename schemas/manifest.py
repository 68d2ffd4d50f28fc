"""Adapter manifest: what a published adapter version is and how it was made.

Field meanings: docs/architecture.md, "Adapter store and manifest".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.versions import VERSION_PATTERN, AdapterVersion

MANIFEST_FILENAME = "manifest.json"
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class OffsetRange(BaseModel):
    """Half-open range [start, end) of offsets consumed from one topic partition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int = Field(..., ge=0)
    start: int = Field(..., ge=0)
    end: int = Field(..., ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> OffsetRange:
        if self.end < self.start:
            raise ValueError("offset range end must be >= start")
        return self


class AdapterManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    model_name: str = Field(..., min_length=1)
    version: str = Field(..., pattern=VERSION_PATTERN)  # "policy@v17"
    parent_version: str | None = None
    kind: str = Field("policy", pattern=r"^(policy|reward|sft)$")
    base_model: str = Field(..., min_length=1)
    base_model_sha256: Sha256
    reward_model_version: str | None = None
    offsets: list[OffsetRange] = Field(default_factory=list)
    event_count: int = Field(0, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    code_revision: str = "unknown"
    # File name (relative to the adapter directory) -> sha256 of its bytes; serving refuses an
    # adapter whose files do not match.
    files: dict[str, Sha256] = Field(..., min_length=1)
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def number(self) -> int:
        return AdapterVersion.parse(self.version).number


PROMOTED_FILENAME = "promoted.json"


class PromotedRecord(BaseModel):
    """``{store}/{name}/promoted.json``: the version the learner last promoted.

    The adapters topic is the source of truth (it also holds operators' promotions and
    rollbacks); this record lets a replica that starts while Kafka is down serve the learner's
    latest promoted version instead of the base, until the topic is readable again.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_name: str = Field(..., min_length=1)
    version: str = Field(..., pattern=VERSION_PATTERN)
    uri: str = Field(..., min_length=1)
    manifest_sha256: Sha256
    promoted_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
