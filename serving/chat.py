"""Chat completions handler: request checks, adapter choice, generation, the served events.

Why one file (over 400 lines): the handler's steps (checks, adapter choice, generation, served
events) share one request's state and the one engine/event-logger pair it owns.

Owns what ``routes/chat.py`` delegates (vLLM's ``serving_chat.py`` split: thin router, handler
that owns the engine). Each answer records the exact adapter version the engine reports for it;
after an answer is complete the handler emits ``pair.served`` (a comparison) or one
``response.served`` per answer through the event logger, whose ``emit`` never blocks, so
logging costs the client nothing (docs/architecture.md, "Event logging never blocks").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field, replace

from schemas.events import ChatMessage, PairServed, ResponseServed, SamplingParams, ServedResponse
from serving import metrics
from serving.deps import Caller, Services, is_admin
from serving.engines.protocol import (
    AdapterRejected,
    GenerationOutput,
    GenerationRequest,
    UnknownAdapter,
)
from serving.errors import APIError
from serving.informative import show_pair
from serving.pairing import PairPlan, plan_pair
from serving.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from serving.security import new_id

logger = logging.getLogger(__name__)


@dataclass
class ChatJob:
    """One accepted chat request, planned: everything needed to answer and to log it."""

    body: ChatCompletionRequest
    messages: list[ChatMessage]
    sampling: SamplingParams
    plan: PairPlan
    paired: bool
    pinned: bool
    uhash: str
    model: str
    pair_id: str | None
    # Inner response ids, canonical order.
    response_ids: list[str]
    started: float = field(default_factory=time.perf_counter)

    def api_index(self, canonical: int) -> int:
        return self.plan.shown_order.index(canonical)


def _messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    out = []
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        out.append(ChatMessage(role=role, content=m.text()))
    return out


def _check_stop(services: Services, body: ChatCompletionRequest) -> None:
    """Stop strings are checked against every decoded token: bound how many and how long."""
    s = services.settings
    stops = body.stop_list()
    if len(stops) > s.max_stop_sequences:
        raise APIError(
            400,
            f"too many stop sequences: {len(stops)} > {s.max_stop_sequences}",
            param="stop",
            code="too_many_stop_sequences",
        )
    longest = max((len(stop) for stop in stops), default=0)
    if longest > s.max_stop_chars:
        raise APIError(
            400,
            f"a stop sequence of {longest} characters exceeds the limit {s.max_stop_chars}",
            param="stop",
            code="stop_sequence_too_long",
        )


# Neutral values of OpenAI parameters this server does not implement: anything else would be
# silently ignored, so it is refused instead.
def _unsupported(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    checks = {
        "logprobs": bool(body.logprobs),
        "top_logprobs": bool(body.top_logprobs),
        "response_format": fmt is not None and fmt.get("type", "text") != "text",
        "tools": bool(body.tools),
        "tool_choice": body.tool_choice not in (None, "none"),
        "functions": bool(body.functions),
        "function_call": body.function_call not in (None, "none"),
        "frequency_penalty": bool(body.frequency_penalty),
        "presence_penalty": bool(body.presence_penalty),
        "logit_bias": bool(body.logit_bias),
    }
    return next((name for name, used in checks.items() if used), None)


def _check_supported(body: ChatCompletionRequest) -> None:
    name = _unsupported(body)
    if name is not None:
        raise APIError(
            400,
            f"{name} is not supported by this server; leave it unset",
            param=name,
            code="unsupported_parameter",
        )


def _check_model(services: Services, body: ChatCompletionRequest) -> None:
    name = services.settings.model_name
    base, _, version = body.model.partition(":")
    if not body.model or (base == name and (not version or version == body.adapter_version)):
        return
    if base == name and body.adapter_version is not None:
        raise APIError(
            400,
            f"model {body.model!r} pins {version!r} but adapter_version is "
            f"{body.adapter_version!r}; give one",
            param="model",
            code="conflicting_versions",
        )
    if base == name:
        return  # "name:version" is a version pin, checked like adapter_version
    raise APIError(
        404,
        f"model {body.model!r} does not exist; GET /v1/models lists {name!r}",
        param="model",
        code="model_not_found",
    )


def _pinned_version(services: Services, body: ChatCompletionRequest) -> str | None:
    """The version a request pins: ``adapter_version``, or the id ``name:version`` that
    ``GET /v1/models`` lists for each loaded adapter."""
    if body.adapter_version is not None:
        return body.adapter_version
    _, _, version = body.model.partition(":")
    return version or None


def _check_limits(services: Services, body: ChatCompletionRequest) -> int:
    """Refuse requests over the configured caps; the max_tokens to use."""
    s = services.settings
    if len(body.messages) > s.max_messages:
        raise APIError(
            400,
            f"too many messages: {len(body.messages)} > {s.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    _check_stop(services, body)
    max_tokens = body.requested_max_tokens() or s.default_max_tokens
    if max_tokens > s.max_tokens_cap:
        raise APIError(
            400,
            f"max_tokens {max_tokens} exceeds the limit {s.max_tokens_cap}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    if body.n > s.max_n:
        raise APIError(
            400, f"n {body.n} exceeds the limit {s.max_n}", param="n", code="n_too_large"
        )
    if body.k > s.max_k:
        raise APIError(
            400, f"k {body.k} exceeds the limit {s.max_k}", param="k", code="k_too_large"
        )
    if body.pair and body.n > 1:
        raise APIError(
            400, "a pair request sets k (answers to compare), not n", param="n", code="n_with_pair"
        )
    _check_supported(body)
    _check_model(services, body)
    return max_tokens


def _check_web_scope(services: Services, body: ChatCompletionRequest, caller: Caller) -> None:
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
        and _pinned_version(services, body) is None
        and (max_tokens is None or max_tokens <= services.settings.default_max_tokens)
    )
    if not page_like:
        raise APIError(
            403,
            "a web session may only ask for the page's two-answer comparisons; "
            "other requests need an API key",
            code="web_session_scope",
        )


def _resolve_version(
    services: Services, body: ChatCompletionRequest, admin_token: str | None
) -> tuple[str, bool]:
    pinned = _pinned_version(services, body)
    if pinned is None:
        return services.adapters.serving_version(), False
    if not is_admin(services, admin_token):
        param = "adapter_version" if body.adapter_version is not None else "model"
        raise APIError(
            403,
            f"{param} may only pin a version with a valid X-Admin-Token",
            param=param,
            code="pin_requires_admin",
        )
    return pinned, True


def _wants_pair(services: Services, body: ChatCompletionRequest, pinned: bool) -> bool:
    if body.pair is not None:
        return body.pair
    # Implicit pairs only where an unmodified client cannot be confused: one answer asked for,
    # not streamed (a streaming client reading choices[0] would mix the two answers), and not
    # an evaluation request pinned to a version (its prompts are not user traffic).
    if body.n > 1 or body.stream or pinned:
        return False
    return random.random() < services.settings.pair_fraction


def prepare(
    services: Services, body: ChatCompletionRequest, caller: Caller, admin_token: str | None
) -> ChatJob:
    max_tokens = _check_limits(services, body)
    _check_web_scope(services, body, caller)
    version, pinned = _resolve_version(services, body, admin_token)
    paired = _wants_pair(services, body, pinned)
    messages = _messages(body)
    sampling = SamplingParams(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        seed=body.seed,
        stop=body.stop_list(),
    )
    base = GenerationRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        n=body.n,
        adapter=version,
    )
    if paired:
        canary = None if pinned else services.adapters.canary_version()
        if canary is not None and random.random() >= services.settings.canary_share:
            canary = None  # this pair compares the serving version with itself
        plan = plan_pair(base, body.k, version, canary)
    else:
        plan = PairPlan([base], list(range(body.n)))
    return ChatJob(
        body=body,
        messages=messages,
        sampling=sampling,
        plan=plan,
        paired=paired,
        pinned=pinned,
        uhash=services.user_hash(caller.api_key, body.user),
        model=services.settings.model_name,
        pair_id=new_id("pair") if paired else None,
        response_ids=[new_id("resp") for _ in range(plan.k)],
    )


async def _run(services: Services, job: ChatJob) -> tuple[list[GenerationOutput], list[float]]:
    async def one(request: GenerationRequest) -> tuple[list[GenerationOutput], float]:
        outputs = await services.engine.generate(request)
        if len(outputs) != request.n:
            # vLLM was seen returning fewer than n outputs (docs/architecture.md): never serve
            # a short set.
            raise RuntimeError(f"engine returned {len(outputs)} answers, expected {request.n}")
        return outputs, time.perf_counter() - job.started

    results = await asyncio.gather(*(one(r) for r in job.plan.requests))
    outputs = [o for batch, _ in results for o in batch]
    latencies = [lat for batch, lat in results for _ in batch]
    return outputs, latencies


def replan_after_swap(services: Services, job: ChatJob) -> bool:
    """After a hot swap unloaded the version a request was planned with, plan it again."""
    if job.pinned:
        return False
    serving = services.adapters.serving_version()
    canary = services.adapters.canary_version()
    current = [serving, canary]
    if all(r.adapter in current for r in job.plan.requests):
        return False
    # The first request is the serving side, a second one the canary side (plan_pair's order).
    requests = [
        r if r.adapter in current else replace(r, adapter=serving if i == 0 else canary or serving)
        for i, r in enumerate(job.plan.requests)
    ]
    job.plan = PairPlan(requests, job.plan.shown_order)
    return True


def drop_comparison_if_same(job: ChatJob, outputs: list[GenerationOutput]) -> None:
    """Identical answers (a temperature-0 pair on one version, say) compare nothing: a vote on
    them would teach the reward model noise, so they are served and logged as plain answers."""
    if not job.paired or len({o.text for o in outputs}) > 1:
        return
    job.paired = False
    metrics.PAIRS_IDENTICAL.inc()


def keep_pair_if_informative(
    services: Services, job: ChatJob, outputs: list[GenerationOutput], latencies: list[float]
) -> tuple[list[GenerationOutput], list[float]]:
    """Informative pairing (serving.informative): a same-version pair whose answers differ
    little is served as its first shown answer alone. Canary pairs are always shown."""
    s = services.settings
    if not job.paired or len(job.plan.requests) > 1:
        return outputs, latencies
    shown = [outputs[i].text for i in job.plan.shown_order]
    if show_pair(shown, s.pair_show_floor, services.pair_differences(), random.Random()):
        return outputs, latencies
    metrics.PAIRS_NOT_SHOWN.inc()
    first = job.plan.shown_order[0]
    job.paired = False
    job.response_ids = [job.response_ids[first]]
    job.plan = PairPlan([replace(job.plan.requests[0], n=1)], [0])
    return [outputs[first]], [latencies[first]]


async def complete(services: Services, job: ChatJob) -> ChatCompletion:
    try:
        outputs, latencies = await _run(services, job)
    except (UnknownAdapter, AdapterRejected):
        if not replan_after_swap(services, job):
            raise
        logger.info(
            "adapter swapped under a request; generating again with %s",
            [r.adapter for r in job.plan.requests],
        )
        outputs, latencies = await _run(services, job)
    drop_comparison_if_same(job, outputs)
    outputs, latencies = keep_pair_if_informative(services, job, outputs, latencies)
    if not job.paired:
        job.pair_id = None  # not sent yet: the client gets no pair to vote on
    emit_served(services, job, outputs, latencies)
    return build_completion(services, job, outputs)


def build_completion(
    services: Services, job: ChatJob, outputs: list[GenerationOutput]
) -> ChatCompletion:
    choices = []
    for api_index, canonical in enumerate(job.plan.shown_order):
        out = outputs[canonical]
        choices.append(
            Choice(
                index=api_index,
                message=AssistantMessage(content=out.text),
                finish_reason=out.finish_reason,
                adapter_version=out.adapter,
                response_id=services.signer.response(
                    job.response_ids[canonical], job.pair_id, job.uhash
                ),
            )
        )
    prompt_tokens = outputs[0].prompt_tokens if outputs else 0
    completion_tokens = sum(o.completion_tokens for o in outputs)
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        model=job.model,
        choices=choices,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        pair_id=pair_token(services, job),
    )


def pair_token(services: Services, job: ChatJob) -> str | None:
    if job.pair_id is None:
        return None
    return services.signer.pair(job.pair_id, job.plan.shown_order, job.uhash)


def emit_served(
    services: Services, job: ChatJob, outputs: list[GenerationOutput], latencies: list[float]
) -> None:
    """Log what was served; never raises into the request (the answer is already computed)."""
    try:
        served = [
            ServedResponse(
                response_id=job.response_ids[i],
                text=o.text,
                adapter_version=o.adapter,
                finish_reason=o.finish_reason,
                prompt_tokens=o.prompt_tokens,
                completion_tokens=o.completion_tokens,
                latency_seconds=latencies[i],
            )
            for i, o in enumerate(outputs)
        ]
        conversation = job.body.conversation_id
        if job.paired and job.pair_id is not None:
            services.events.emit(
                PairServed(
                    pair_id=job.pair_id,
                    conversation_id=conversation,
                    user_id=job.uhash,
                    model=job.model,
                    messages=job.messages,
                    responses=served,
                    shown_order=job.plan.shown_order,
                    sampling=job.sampling,
                )
            )
            metrics.PAIRS_SERVED.inc()
        else:
            for response in served:
                services.events.emit(
                    ResponseServed(
                        conversation_id=conversation,
                        user_id=job.uhash,
                        model=job.model,
                        messages=job.messages,
                        response=response,
                        sampling=job.sampling,
                    )
                )
        metrics.RESPONSES_SERVED.inc(len(served))
        metrics.COMPLETION_TOKENS.inc(sum(o.completion_tokens for o in outputs))
        if outputs:
            metrics.PROMPT_TOKENS.inc(outputs[0].prompt_tokens)
    except Exception:
        metrics.EMIT_ERRORS.inc()
        logger.exception("could not build the served event for pair %s", job.pair_id)
