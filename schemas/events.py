"""Kafka event models (docs/architecture.md, "Kafka topics and events").

Every event carries ``schema_version``, a unique ``event_id`` (the idempotency key), a UTC
``ts`` and a ``kind`` discriminator. Models forbid unknown fields, so a producer cannot send
something the contract does not name; consumers go through ``schemas.codec.decode_event``.

Feedback events refer to ids only: the learner joins them to the served content it got from
``pair.served``/``response.served`` and never trusts text sent with a vote (a correction's text
is the one exception: it *is* the demonstration).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=256)]


def new_event_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(StrictModel):
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(..., ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class ServedResponse(StrictModel):
    """One generated answer as it was served."""

    response_id: NonEmptyStr
    text: str
    # Exact adapter version that produced it, e.g. "policy@v17", or "base".
    adapter_version: NonEmptyStr
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int = Field(..., ge=0)
    completion_tokens: int = Field(..., ge=0)
    latency_seconds: float = Field(..., ge=0.0)


class EventBase(StrictModel):
    kind: str  # narrowed to a Literal by each event class; the discriminator
    schema_version: int = SCHEMA_VERSION
    event_id: NonEmptyStr = Field(default_factory=new_event_id)
    ts: AwareDatetime = Field(default_factory=utc_now)

    @field_validator("ts")
    @classmethod
    def _ts_is_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def key(self) -> str:
        """Kafka message key (see the topic table in docs/architecture.md)."""
        raise NotImplementedError


class PairServed(EventBase):
    """Two (or K) candidate answers to one prompt were shown to a user."""

    kind: Literal["pair.served"] = "pair.served"
    pair_id: NonEmptyStr
    conversation_id: NonEmptyStr | None = None
    # Keyed hash of the API key/user; never a raw key or IP.
    user_id: NonEmptyStr
    model: NonEmptyStr
    messages: list[ChatMessage] = Field(..., min_length=1)
    # Canonical order: feedback choice "a" means responses[0], "b" means responses[1].
    responses: list[ServedResponse] = Field(..., min_length=2)
    # shown_order[i] = index into ``responses`` of the answer displayed in position i.
    shown_order: list[int]
    sampling: SamplingParams

    @model_validator(mode="after")
    def _check_order(self) -> PairServed:
        if sorted(self.shown_order) != list(range(len(self.responses))):
            raise ValueError("shown_order must be a permutation of the response indexes")
        ids = [r.response_id for r in self.responses]
        if len(set(ids)) != len(ids):
            raise ValueError("response ids must be unique within a pair")
        return self

    def key(self) -> str:
        return self.pair_id


class ResponseServed(EventBase):
    """A single (unpaired) answer was served."""

    kind: Literal["response.served"] = "response.served"
    conversation_id: NonEmptyStr | None = None
    user_id: NonEmptyStr
    model: NonEmptyStr
    messages: list[ChatMessage] = Field(..., min_length=1)
    response: ServedResponse
    sampling: SamplingParams

    def key(self) -> str:
        return self.response.response_id


class FeedbackPreference(EventBase):
    """A comparison: a choice between two answers, or a full ranking of K answers.

    ``choice`` is for pairs: "a"/"b" name responses[0]/responses[1] of the pair event (canonical
    order, not display order), "tie" means equally good, "both_bad" means neither is acceptable.
    ``ranking`` is for K >= 2: response ids best first, covering every answer of the pair.
    Exactly one of the two is set.
    """

    kind: Literal["feedback.preference"] = "feedback.preference"
    pair_id: NonEmptyStr
    user_id: NonEmptyStr
    choice: Literal["a", "b", "tie", "both_bad"] | None = None
    ranking: list[NonEmptyStr] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> FeedbackPreference:
        if (self.choice is None) == (self.ranking is None):
            raise ValueError("exactly one of choice or ranking must be given")
        if self.ranking is not None:
            if len(self.ranking) < 2:
                raise ValueError("a ranking needs at least two response ids")
            if len(set(self.ranking)) != len(self.ranking):
                raise ValueError("a ranking must not repeat a response id")
        return self

    def key(self) -> str:
        return self.pair_id


class FeedbackRating(EventBase):
    """Thumbs up/down on one served answer (paired or not)."""

    kind: Literal["feedback.rating"] = "feedback.rating"
    response_id: NonEmptyStr
    pair_id: NonEmptyStr | None = None
    user_id: NonEmptyStr
    rating: Literal["up", "down"]

    def key(self) -> str:
        return self.pair_id or self.response_id


class FeedbackCorrection(EventBase):
    """A better answer written by the user: a demonstration for SFT."""

    kind: Literal["feedback.correction"] = "feedback.correction"
    response_id: NonEmptyStr
    pair_id: NonEmptyStr | None = None
    user_id: NonEmptyStr
    text: str = Field(..., min_length=1, max_length=32_000)

    def key(self) -> str:
        return self.pair_id or self.response_id


class AdapterPublished(EventBase):
    """The learner wrote a new adapter version to the store; the manifest says what it is."""

    kind: Literal["adapter.published"] = "adapter.published"
    model_name: NonEmptyStr
    version: NonEmptyStr  # e.g. "policy@v17"; immutable once published
    uri: NonEmptyStr  # directory (local path or fsspec URL) holding files + manifest.json
    manifest_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    promote: bool = True  # ask serving to make it the serving version once it passes its checks
    # Ask serving to load it as the canary: one answer of a share of pairs comes from it, until
    # the users' votes promote it or roll it back (adapter.promoted / adapter.rolled_back).
    canary: bool = False

    @model_validator(mode="after")
    def _promote_or_canary(self) -> AdapterPublished:
        if self.promote and self.canary:
            raise ValueError("a version is published either promoted or as a canary, not both")
        return self

    def key(self) -> str:
        return self.model_name


# The numbers behind an automatic decision (votes, win rate, its interval, guard figures).
Evidence = dict[str, float | int | str]


class AdapterPromoted(EventBase):
    kind: Literal["adapter.promoted"] = "adapter.promoted"
    model_name: NonEmptyStr
    version: NonEmptyStr
    previous_version: NonEmptyStr | None = None
    evidence: Evidence | None = None

    def key(self) -> str:
        return self.model_name


class AdapterRolledBack(EventBase):
    kind: Literal["adapter.rolled_back"] = "adapter.rolled_back"
    model_name: NonEmptyStr
    from_version: NonEmptyStr
    to_version: NonEmptyStr
    reason: str = ""
    evidence: Evidence | None = None

    def key(self) -> str:
        return self.model_name


class UserErased(EventBase):
    """A user (by pseudonymous id) asked to be forgotten: the learner deletes what it stored of
    them and ignores their later events. Keyed by the user so all erasures of one user stay in
    order on the feedback topic."""

    kind: Literal["user.erased"] = "user.erased"
    user_id: NonEmptyStr
    requested_by: Literal["admin-api", "learner-cli"]
    reason: str = Field("", max_length=1000)

    def key(self) -> str:
        return self.user_id


Event = Annotated[
    PairServed
    | ResponseServed
    | FeedbackPreference
    | FeedbackRating
    | FeedbackCorrection
    | AdapterPublished
    | AdapterPromoted
    | AdapterRolledBack
    | UserErased,
    Field(discriminator="kind"),
]

EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        PairServed,
        ResponseServed,
        FeedbackPreference,
        FeedbackRating,
        FeedbackCorrection,
        AdapterPublished,
        AdapterPromoted,
        AdapterRolledBack,
        UserErased,
    )
}
