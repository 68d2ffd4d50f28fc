"""The OpenAPI document as the server behaves: 400 (not FastAPI's 422) for invalid input, the
error body every failure uses, and the configured caps and cross-field rules as schema.

A client generator or a schema-driven fuzzer (schemathesis) must be able to trust the document:
anything it calls valid is accepted (or refused only for credentials, a missing adapter, or
load), anything it calls invalid is a 4xx. The caps come from the settings the app runs with,
so the document is built per app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.api_models import ErrorResponse
from serving.settings import ServingSettings

Schema = dict[str, Any]

# Statuses any operation may answer with, all in the OpenAI error body.
_ERRORS = {
    "400": "invalid request (a field, a cap or a cross-field rule)",
    "401": "missing or invalid credentials",
    "403": "not allowed for these credentials",
    "404": "unknown model, adapter or route",
    "409": "conflicts with the current state (adapter, pair, or an Idempotency-Key's first use)",
    "413": "request body too large",
    "429": "rate limited; see Retry-After",
    "503": "overloaded or not ready; see Retry-After",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FEEDBACK_KINDS = {
    "choice": "pair_id",
    "ranking": "pair_id",
    "rating": "response_id",
    "correction": "response_id",
}
# OpenAI parameters the server does not implement: only their neutral values are valid.
_NEUTRAL: dict[str, Schema] = {
    "logprobs": {"enum": [False, None]},
    "top_logprobs": {"enum": [0, None]},
    "response_format": {
        "anyOf": [
            {"type": "object", "properties": {"type": {"const": "text"}}, "required": ["type"]},
            {"type": "null"},
        ]
    },
    "tools": {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
    "tool_choice": {"enum": ["none", None]},
    "functions": {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]},
    "function_call": {"enum": ["none", None]},
    "frequency_penalty": {"enum": [0, None]},
    "presence_penalty": {"enum": [0, None]},
    "logit_bias": {"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]},
    "parallel_tool_calls": {"type": "null"},
    "reasoning_effort": {"type": "null"},
    "modalities": {"anyOf": [{"const": ["text"]}, {"type": "null"}]},
    "audio": {"type": "null"},
    "prediction": {"type": "null"},
    "web_search_options": {"type": "null"},
}


def install_openapi(app: FastAPI, settings: ServingSettings) -> None:
    def openapi() -> Schema:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            describe_errors(schema)
            describe_chat_rules(schema["components"]["schemas"], settings)
            describe_feedback_rule(schema["components"]["schemas"])
            describe_erase_rule(schema["components"]["schemas"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe_errors(schema: Schema) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error.pop("$defs", {}))
    components["ErrorResponse"] = error
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422")):
                del responses["422"]  # FastAPI's; validation errors are 400s here
            for status, description in _ERRORS.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                )


def _not_null(prop: Schema) -> list[Schema]:
    """The members of a (possibly nullable) property schema that are not ``null``."""
    members = prop.get("anyOf", [prop])
    return [m for m in members if m.get("type") != "null"]


def _cap(prop: Schema, type_: str, **limits: int) -> None:
    for member in _not_null(prop):
        if member.get("type") == type_:
            member.update(limits)


# <id>.<id or order>.<expiry>.<mac>: a malformed id is a 400, a well-formed foreign one a 403.
SIGNED_ID_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[0-9]+\.[A-Za-z0-9_-]+$"


def _cap_pattern(prop: Schema, type_: str) -> None:
    for member in _not_null(prop):
        if member.get("type") == type_:
            member["pattern"] = SIGNED_ID_PATTERN


def describe_chat_rules(components: Schema, settings: ServingSettings) -> None:
    request = components["ChatCompletionRequest"]
    props = request["properties"]
    props["messages"]["maxItems"] = settings.max_messages
    for field in ("max_tokens", "max_completion_tokens"):
        _cap(props[field], "integer", maximum=settings.max_tokens_cap)
    props["n"]["maximum"] = settings.max_n
    props["k"]["maximum"] = settings.max_k
    _cap(props["stop"], "string", maxLength=settings.max_stop_chars)
    _cap(props["stop"], "array", maxItems=settings.max_stop_sequences)
    for member in _not_null(props["stop"]):
        if member.get("type") == "array":
            member["items"]["maxLength"] = settings.max_stop_chars
    for field, neutral in _NEUTRAL.items():
        props[field] = {**neutral, "description": "not supported: neutral value only"}
    name = settings.model_name
    props["model"]["description"] = (
        f"{name!r}, or {name + ':<version>'!r} to pin a loaded adapter version (admin only)"
    )
    # A pair request sets k, not n.
    request["anyOf"] = [
        {"properties": {"pair": {"const": True}, "n": {"const": 1}}},
        {"properties": {"pair": {"enum": [False, None]}}},
    ]


def _branches(component: Schema, branches: list[tuple[list[str], list[str]]]) -> None:
    """``oneOf`` over (fields that must be given, fields that must be absent or null)."""
    props = component["properties"]
    out = []
    for given, absent in branches:
        branch: Schema = {"required": given, "properties": {}}
        for field in given:
            members = _not_null(props[field])
            branch["properties"][field] = members[0] if len(members) == 1 else {"anyOf": members}
        for field in absent:
            branch["properties"][field] = {"type": "null"}
        out.append(branch)
    component["oneOf"] = out


def describe_feedback_rule(components: Schema) -> None:
    """Exactly one of choice / ranking / rating / correction, each with the id it needs; ids
    are the signed tokens the chat response gave (``serving.security``)."""
    props = components["FeedbackRequest"]["properties"]
    for field in ("pair_id", "response_id"):
        _cap_pattern(props[field], "string")
    for member in _not_null(props["ranking"]):
        _cap_pattern(member["items"], "string")
    _branches(
        components["FeedbackRequest"],
        [
            ([kind, needs], [other for other in _FEEDBACK_KINDS if other != kind])
            for kind, needs in _FEEDBACK_KINDS.items()
        ],
    )


def describe_erase_rule(components: Schema) -> None:
    """A user by ``user_id``, or by ``user`` with ``api_key``."""
    _branches(
        components["EraseRequest"],
        [(["user_id"], ["user", "api_key"]), (["user", "api_key"], ["user_id"])],
    )
