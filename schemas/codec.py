"""Encoding and tolerant decoding of events.

Producers: ``encode_event`` serialises a validated model (unknown fields were already refused
when the model was built). Consumers: ``decode_event`` never raises for bad input; it returns a
``DecodeResult`` whose ``error`` says why the message was skipped (malformed JSON, unknown kind,
unsupported schema version, invalid fields) and whose ``unknown_fields`` lists fields it dropped,
so old consumers survive newer producers and callers can count both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.events import EVENT_TYPES, SCHEMA_VERSION, EventBase


class DecodeError(str):
    """Reason a message was skipped; a short, countable label plus detail after ': '."""

    @property
    def label(self) -> str:
        return self.split(":", 1)[0]


@dataclass
class DecodeResult:
    event: EventBase | None = None
    error: DecodeError | None = None
    unknown_fields: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.event is not None


def encode_event(event: BaseModel) -> bytes:
    return event.model_dump_json().encode("utf-8")


def decode_event(raw: bytes | str | None) -> DecodeResult:
    try:
        data = json.loads(raw) if raw is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        return DecodeResult(error=DecodeError(f"malformed_json: {exc}"))
    if not isinstance(data, dict):
        return DecodeResult(error=DecodeError("malformed_json: top level is not an object"))
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
        return DecodeResult(error=DecodeError(f"unsupported_version: {version!r}"))
    cls = EVENT_TYPES.get(str(data.get("kind")))
    if cls is None:
        return DecodeResult(error=DecodeError(f"unknown_kind: {data.get('kind')!r}"))
    return _validate_dropping_unknown(cls, data)


def _validate_dropping_unknown(cls: type[EventBase], data: dict[str, Any]) -> DecodeResult:
    dropped: list[str] = []
    # Each pass removes the unknown fields pydantic reported; nested models can reveal more
    # after an outer fix, hence a small bounded loop rather than a single retry.
    for _ in range(8):
        try:
            return DecodeResult(event=cls.model_validate(data), unknown_fields=dropped)
        except ValidationError as exc:
            extra = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
            if not extra or len(extra) != len(exc.errors()):
                return DecodeResult(
                    error=DecodeError(f"invalid: {_summary(exc)}"), unknown_fields=dropped
                )
            for loc in extra:
                _delete_path(data, loc)
                dropped.append(".".join(str(p) for p in loc))
    return DecodeResult(error=DecodeError("invalid: too many unknown fields"))


def _delete_path(data: Any, loc: tuple[Any, ...]) -> None:
    node = data
    for part in loc[:-1]:
        node = node[part]
    node.pop(loc[-1], None)


def _summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"
