"""The checks of a chat request before anything is generated: caps on size and length, the
OpenAI parameters this server does not implement, the model name, and what a web session may
ask. Pure functions of the settings and the body; each refusal is an ``APIError`` with the
OpenAI ``param`` and a stable ``code``.
"""

from __future__ import annotations

from serving.api_models import ChatCompletionRequest
from serving.deps import Caller, Services
from serving.errors import APIError


def _refused(param: str, code: str, message: str, status: int = 400) -> APIError:
    """A refusal naming the parameter at fault (OpenAI's ``param``) and a stable ``code``."""
    return APIError(status, message, param=param, code=code)


def _check_stop(services: Services, body: ChatCompletionRequest) -> None:
    """Stop strings are checked against every decoded token: bound how many and how long."""
    s = services.settings
    stops = body.stop_list()
    if len(stops) > s.max_stop_sequences:
        raise _refused(
            "stop",
            "too_many_stop_sequences",
            f"too many stop sequences: {len(stops)} > {s.max_stop_sequences}",
        )
    longest = max((len(stop) for stop in stops), default=0)
    if longest > s.max_stop_chars:
        raise _refused(
            "stop",
            "stop_sequence_too_long",
            f"a stop sequence of {longest} characters exceeds the limit {s.max_stop_chars}",
        )


# Neutral values of OpenAI parameters this server does not implement: anything else would be
# silently ignored, so it is refused instead.
def _unsupported(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    checks = {
        "logprobs": bool(body.logprobs),
        "top_logprobs": bool(body.top_logprobs),
        "response_format": fmt is not None and fmt.type != "text",
        "tools": bool(body.tools),
        "tool_choice": body.tool_choice not in (None, "none"),
        # As OpenAI: only meaningful with tools, which are never served, so any value is refused.
        "parallel_tool_calls": body.parallel_tool_calls is not None,
        "functions": bool(body.functions),
        "function_call": body.function_call not in (None, "none"),
        "frequency_penalty": bool(body.frequency_penalty),
        "presence_penalty": bool(body.presence_penalty),
        "logit_bias": bool(body.logit_bias),
        "reasoning_effort": body.reasoning_effort is not None,
        "modalities": body.modalities not in (None, ["text"]),
        "audio": body.audio is not None,
        "prediction": body.prediction is not None,
        "web_search_options": body.web_search_options is not None,
    }
    return next((name for name, used in checks.items() if used), None)


def _check_supported(body: ChatCompletionRequest) -> None:
    name = _unsupported(body)
    if name is not None:
        message = f"{name} is not supported by this server; leave it unset"
        raise _refused(name, "unsupported_parameter", message)


def _check_model(services: Services, body: ChatCompletionRequest) -> None:
    name = services.settings.model_name
    base, _, version = body.model.partition(":")
    if not body.model or (base == name and (not version or version == body.adapter_version)):
        return
    if base == name and body.adapter_version is not None:
        raise _refused(
            "model",
            "conflicting_versions",
            f"model {body.model!r} pins {version!r} but adapter_version is "
            f"{body.adapter_version!r}; give one",
        )
    if base == name:
        return  # "name:version" is a version pin, checked like adapter_version
    raise _refused(
        "model",
        "model_not_found",
        f"model {body.model!r} does not exist; GET /v1/models lists {name!r}",
        status=404,
    )


def pinned_version(body: ChatCompletionRequest) -> str | None:
    """The version a request pins: ``adapter_version``, or the id ``name:version`` that
    ``GET /v1/models`` lists for each loaded adapter."""
    if body.adapter_version is not None:
        return body.adapter_version
    _, _, version = body.model.partition(":")
    return version or None


def check_limits(services: Services, body: ChatCompletionRequest) -> int:
    """Refuse requests over the configured caps; the max_tokens to use."""
    s = services.settings
    if len(body.messages) > s.max_messages:
        raise _refused(
            "messages",
            "too_many_messages",
            f"too many messages: {len(body.messages)} > {s.max_messages}",
        )
    _check_stop(services, body)
    max_tokens = body.requested_max_tokens() or s.default_max_tokens
    if max_tokens > s.max_tokens_cap:
        raise _refused(
            "max_tokens",
            "max_tokens_too_large",
            f"max_tokens {max_tokens} exceeds the limit {s.max_tokens_cap}",
        )
    if body.n > s.max_n:
        raise _refused("n", "n_too_large", f"n {body.n} exceeds the limit {s.max_n}")
    if body.k > s.max_k:
        raise _refused("k", "k_too_large", f"k {body.k} exceeds the limit {s.max_k}")
    if body.pair and body.n > 1:
        raise _refused("n", "n_with_pair", "a pair request sets k (answers to compare), not n")
    _check_supported(body)
    _check_model(services, body)
    return max_tokens


def check_web_scope(services: Services, body: ChatCompletionRequest, caller: Caller) -> None:
    """A web session may ask only what the page asks: one two-answer comparison, not streamed,
    at the default length; anything else needs an API key."""
    if not caller.web:
        return
    max_tokens = body.requested_max_tokens()
    page_like = (
        body.pair is True
        and body.k == 2
        and body.n == 1
        and not body.stream
        and pinned_version(body) is None
        and (max_tokens is None or max_tokens <= services.settings.default_max_tokens)
    )
    if not page_like:
        raise APIError(
            403,
            "a web session may only ask for the page's two-answer comparisons; "
            "other requests need an API key",
            code="web_session_scope",
        )
