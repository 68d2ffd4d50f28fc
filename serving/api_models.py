"""OpenAI wire models for the HTTP API, plus this service's pairing and feedback extensions.

Shapes follow the OpenAI Chat Completions API (``/v1/chat/completions``, ``/v1/models``, error
body ``{"error": {"message", "type", "param", "code"}}``) closely enough that the official
``openai`` client works unchanged; layout after vLLM's ``vllm/entrypoints/openai/protocol.py``.
Extensions (sent by the openai client through ``extra_body``): ``pair``, ``k``,
``adapter_version``; responses add ``pair_id`` and, per choice, ``response_id`` and
``adapter_version``. OpenAI parameters this server does not implement (logprobs, tools,
response_format, penalties...) are accepted at their neutral values and refused with a 400
otherwise (``serving.chat_checks``), so a client never gets a silently different answer; unknown
fields are ignored. Every string must be valid Unicode: a lone surrogate (``"\\ud800"`` in the
JSON) cannot be encoded for the model or the log, so it is a 400 here, not a 500 later.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.manifest import AdapterManifest
from schemas.versions import VERSION_PATTERN


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode: lone surrogate at position {exc.start}") from None
    return value


# JSON allows escaped lone surrogates that no UTF-8 text can hold.
Text = Annotated[str, AfterValidator(_encodable)]

# Unbounded, a seed of 2**80 would reach an engine's generator (torch, vLLM's SamplingParams)
# and fail there. The bound is I-JSON's interoperable integer range (RFC 7493, 2.2: what a
# double holds exactly), not int64's: a client, a proxy or a schema checker that reads JSON
# numbers as doubles cannot tell 2**63 - 1 from 2**63, so a published int64 maximum is not
# one every client can keep.
SEED_MIN, SEED_MAX = -(2**53 - 1), 2**53 - 1


def _all_text_encodable(value: Any, path: str = "body") -> None:
    """Every string of the raw body, keys and unknown fields included, is valid Unicode: an
    ignored field is still read by the log and the proxy in front, and the README promises a
    400 for a lone surrogate in any string."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            message = f"{path}: not valid Unicode: lone surrogate at position {exc.start}"
            raise ValueError(message) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _all_text_encodable(key, f"{path} key")
            _all_text_encodable(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _all_text_encodable(item, f"{path}[{i}]")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


class RequestMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # "developer" is OpenAI's newer name for a system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: ``type`` is required, as OpenAI requires it; only "text"
    is served (``serving.chat_checks`` refuses the others rather than ignore them)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text = ""
    messages: list[RequestMessage] = Field(..., min_length=1)
    # Not NaN or infinite: a NaN fails every bound, and the bound's message would mislead.
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: Text | list[Text] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(None, max_length=256)
    # OpenAI parameters not implemented: neutral values only (checked in serving.chat_checks).
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    frequency_penalty: float | None = Field(None, allow_inf_nan=False)
    presence_penalty: float | None = Field(None, allow_inf_nan=False)
    logit_bias: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = None
    reasoning_effort: Text | None = None
    modalities: list[Text] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    # Extensions.
    pair: bool | None = None
    k: int = Field(2, ge=2)
    adapter_version: Text | None = Field(None, min_length=1, max_length=256)
    conversation_id: Text | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _every_string_encodable(cls, data: Any) -> Any:
        _all_text_encodable(data)
        return data

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None
    response_id: str
    adapter_version: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def counted(cls, prompt_tokens: int, completion_tokens: list[int]) -> Usage:
        """One prompt's tokens (counted once however many answers) and every answer's."""
        completion = sum(completion_tokens)
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
        )


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    pair_id: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None
    response_id: str
    adapter_version: str


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    pair_id: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rlhf-service"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class FeedbackRequest(BaseModel):
    """One vote. Exactly one of choice / ranking / rating / correction.

    ``choice`` and ``ranking`` go with ``pair_id``; ``rating`` and ``correction`` with
    ``response_id``. "a"/"b" name choices[0]/choices[1] as the chat response returned them.
    """

    model_config = ConfigDict(extra="forbid")

    pair_id: Text | None = Field(None, min_length=1, max_length=512)
    response_id: Text | None = Field(None, min_length=1, max_length=512)
    choice: Literal["a", "b", "tie", "both_bad"] | None = None
    ranking: list[Text] | None = Field(None, min_length=2, max_length=16)
    rating: Literal["up", "down"] | None = None
    correction: Text | None = Field(None, min_length=1, max_length=32_000)
    user: Text | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _exactly_one(self) -> FeedbackRequest:
        given = [
            f for f in ("choice", "ranking", "rating", "correction") if getattr(self, f) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, ranking, rating, correction")
        needs = "pair_id" if given[0] in ("choice", "ranking") else "response_id"
        if getattr(self, needs) is None:
            raise ValueError(f"{given[0]} needs {needs}")
        return self

    def kind(self) -> str:
        if self.choice is not None or self.ranking is not None:
            return "preference"
        return "rating" if self.rating is not None else "correction"


class FeedbackResponse(BaseModel):
    object: Literal["feedback"] = "feedback"
    event_id: str
    kind: str
    accepted: bool = True


class EraseRequest(BaseModel):
    """``POST /admin/users/erase``: the user by pseudonymous id, or by the ``user`` field an
    application sends together with that application's API key (serving derives the id)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Text | None = Field(None, min_length=1, max_length=256)
    user: Text | None = Field(None, min_length=1, max_length=256)
    api_key: Text | None = Field(None, min_length=1, max_length=512)
    reason: Text = Field("", max_length=1000)

    @model_validator(mode="after")
    def _one_identity(self) -> EraseRequest:
        by_id = self.user_id is not None
        by_name = self.user is not None or self.api_key is not None
        if by_id == by_name:
            raise ValueError("give either user_id, or user with api_key")
        if by_name and (self.user is None or self.api_key is None):
            raise ValueError("user and api_key go together")
        return self


class EraseResponse(BaseModel):
    object: Literal["erasure"] = "erasure"
    event_id: str
    user_id: str


# ---- admin API (``/admin/adapters``) ----------------------------------------------------------


class ManifestSummary(BaseModel):
    parent_version: str | None
    kind: str
    base_model: str
    reward_model_version: str | None
    event_count: int
    metrics: dict[str, float]
    created_at: datetime
    code_revision: str

    @classmethod
    def of(cls, m: AdapterManifest) -> ManifestSummary:
        return cls.model_validate(m.model_dump(include=set(cls.model_fields)))


class AdapterInfo(BaseModel):
    version: str
    state: Literal["serving", "canary", "previous", "loaded", "unloading"]
    loaded_at: datetime | None
    uri: str | None = None
    manifest: ManifestSummary | None = None
    is_serving: bool
    is_canary: bool


class AdapterState(BaseModel):
    """What every ``/admin/adapters`` call answers: the versions and their states."""

    serving_version: str
    canary_version: str | None
    adapters: list[AdapterInfo]


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(..., max_length=256, pattern=VERSION_PATTERN)
    uri: str | None = Field(None, min_length=1, max_length=2048)


class VersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(..., max_length=256, pattern=VERSION_PATTERN)


class CanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, max_length=256, pattern=VERSION_PATTERN)
