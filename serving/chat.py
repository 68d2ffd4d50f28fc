"""Chat completions handler: adapter choice, generation, the served events.

``ChatHandler`` owns what ``routes/chat.py`` delegates (vLLM's ``serving_chat.py`` split: thin
router, handler that owns the engine), streamed or not (``serving.streaming`` builds the SSE
body and hands the finished answers to the ``on_finished`` callable it is given, which is
``ChatHandler.finish_answers``). The request's checks are ``serving.chat_checks``; the planned
request is ``serving.chat_job.ChatJob``. Each answer records the exact adapter version the
engine reports for it; after an answer is complete the handler emits
``pair.served`` (a comparison) or one ``response.served`` per answer through the event logger,
whose ``emit`` never blocks, so logging costs the client nothing (docs/architecture.md, "Event
logging never blocks").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from schemas.events import ChatMessage, PairServed, ResponseServed, SamplingParams, ServedResponse
from serving import metrics
from serving.api_models import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from serving.chat_checks import check_limits, check_web_scope, pinned_version
from serving.chat_job import ChatJob
from serving.deps import Caller, Services, is_admin
from serving.engines.protocol import (
    AdapterRejected,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
    UnknownAdapter,
)
from serving.errors import APIError
from serving.pair_sampling import show_pair
from serving.pairing import AnswerPlan, plan_pair
from serving.security import new_id
from serving.streaming import ChatStream

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    out = []
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        out.append(ChatMessage(role=role, content=m.text()))
    return out


def _resolve_version(
    services: Services, body: ChatCompletionRequest, admin_token: str | None
) -> tuple[str, bool]:
    pinned = pinned_version(body)
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
    return random.random() < services.settings.unrequested_pair_share


class ChatHandler:
    """One chat request's path from a checked body to served answers and their event.

    Owns the engine and the event logger for the request: the one hot-swap retry
    (``_with_swap_retry``) covers a plain generation and a stream's first increment alike, and
    both end in ``finish_answers`` (identical answers unpaired, informative pairing, the served
    event)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.engine = services.engine
        self.events = services.events

    def prepare(
        self, body: ChatCompletionRequest, caller: Caller, admin_token: str | None
    ) -> ChatJob:
        services = self.services
        max_tokens = check_limits(services, body)
        check_web_scope(services, body, caller)
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
            plan = AnswerPlan([base], list(range(body.n)))
        return ChatJob(
            body=body,
            messages=messages,
            sampling=sampling,
            plan=plan,
            paired=paired,
            pinned=pinned,
            user_hash=services.user_hash(caller.api_key, body.user),
            model=services.settings.model_name,
            pair_id=new_id("pair") if paired else None,
            response_ids=[new_id("resp") for _ in range(plan.k)],
        )

    async def complete(self, job: ChatJob) -> ChatCompletion:
        outputs, latencies = await self._with_swap_retry(job, lambda: self._generate(job))
        outputs = self.finish_answers(job, outputs, latencies, streamed=False)
        return self._completion(job, outputs)

    async def stream(self, job: ChatJob) -> AsyncIterator[str]:
        """The SSE body, once its first increment is in (so overload or a bad adapter still
        gets a proper status code)."""

        async def opened() -> tuple[ChatStream, tuple[int, GenerationChunk] | None]:
            stream = ChatStream(
                self.engine,
                job,
                self.pair_token(job),
                [self.response_token(job, i) for i in range(job.plan.k)],
                on_finished=lambda outputs, latencies: self.finish_answers(
                    job, outputs, latencies, streamed=True
                ),
            )
            return stream, await stream.first()

        stream, first = await self._with_swap_retry(job, opened)
        return stream.body(first)

    async def _with_swap_retry(self, job: ChatJob, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt``; if a hot swap unloaded a version it was planned with before it
        began, plan the job again and run it once more."""
        try:
            return await attempt()
        except (UnknownAdapter, AdapterRejected):
            if not self._replan_after_swap(job):
                raise
            logger.info(
                "adapter swapped under a request; generating again with %s",
                [r.adapter for r in job.plan.requests],
            )
            return await attempt()

    def _replan_after_swap(self, job: ChatJob) -> bool:
        if job.pinned:
            return False
        serving = self.services.adapters.serving_version()
        canary = self.services.adapters.canary_version()
        current = [serving, canary]
        if all(r.adapter in current for r in job.plan.requests):
            return False
        # The first request is the serving side, a second one the canary side (plan_pair's order).
        requests = [
            r
            if r.adapter in current
            else replace(r, adapter=serving if i == 0 else canary or serving)
            for i, r in enumerate(job.plan.requests)
        ]
        job.plan = AnswerPlan(requests, job.plan.shown_order)
        return True

    async def _generate(self, job: ChatJob) -> tuple[list[GenerationOutput], list[float]]:
        async def one(request: GenerationRequest) -> tuple[list[GenerationOutput], float]:
            outputs = await self.engine.generate(request)
            if len(outputs) != request.n:
                # vLLM was seen returning fewer than n outputs (docs/measurements.md): never
                # serve a short set.
                raise RuntimeError(f"engine returned {len(outputs)} answers, expected {request.n}")
            return outputs, time.perf_counter() - job.started

        results = await asyncio.gather(*(one(r) for r in job.plan.requests))
        outputs = [o for batch, _ in results for o in batch]
        latencies = [lat for batch, lat in results for _ in batch]
        return outputs, latencies

    def finish_answers(
        self,
        job: ChatJob,
        outputs: list[GenerationOutput],
        latencies: list[float],
        *,
        streamed: bool,
    ) -> list[GenerationOutput]:
        """The one output path of finished answers, streamed or not: identical answers are no
        comparison, a non-streamed same-version pair is shown only if informative (a streamed
        pair has been shown already), then the served event. The answers to return."""
        drop_comparison_if_same(job, outputs)
        if not streamed:
            outputs, latencies = keep_pair_if_informative(self.services, job, outputs, latencies)
        if not job.paired:
            # Not a comparison: a non-streamed client gets no pair to vote on; a streamed one
            # already has the pair token, and its vote never finds a pair (the learner expires it).
            job.pair_id = None
        self._emit_served(job, outputs, latencies)
        return outputs

    def pair_token(self, job: ChatJob) -> str | None:
        """The signed pair id sent to the client (carries the shown order)."""
        if job.pair_id is None:
            return None
        return self.services.signer.pair(job.pair_id, job.plan.shown_order, job.user_hash)

    def response_token(self, job: ChatJob, canonical: int) -> str:
        return self.services.signer.response(
            job.response_ids[canonical], job.pair_id, job.user_hash
        )

    def _completion(self, job: ChatJob, outputs: list[GenerationOutput]) -> ChatCompletion:
        choices = []
        for api_index, canonical in enumerate(job.plan.shown_order):
            out = outputs[canonical]
            choices.append(
                Choice(
                    index=api_index,
                    message=AssistantMessage(content=out.text),
                    finish_reason=out.finish_reason,
                    adapter_version=out.adapter,
                    response_id=self.response_token(job, canonical),
                )
            )
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            model=job.model,
            choices=choices,
            usage=Usage.counted(
                outputs[0].prompt_tokens if outputs else 0, [o.completion_tokens for o in outputs]
            ),
            pair_id=self.pair_token(job),
        )

    def _emit_served(
        self, job: ChatJob, outputs: list[GenerationOutput], latencies: list[float]
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
                self.events.emit(
                    PairServed(
                        pair_id=job.pair_id,
                        conversation_id=conversation,
                        user_id=job.user_hash,
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
                    self.events.emit(
                        ResponseServed(
                            conversation_id=conversation,
                            user_id=job.user_hash,
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
    """Informative pairing (serving.pair_sampling): a same-version pair whose answers differ
    little is served as its first shown answer alone. Canary pairs are always shown."""
    s = services.settings
    if not job.paired or len(job.plan.requests) > 1:
        return outputs, latencies
    shown = [outputs[i].text for i in job.plan.shown_order]
    if show_pair(shown, s.pair_show_floor, services.pair_differences()):
        return outputs, latencies
    metrics.PAIRS_NOT_SHOWN.inc()
    first = job.plan.shown_order[0]
    job.paired = False
    job.response_ids = [job.response_ids[first]]
    job.plan = AnswerPlan([replace(job.plan.requests[0], n=1)], [0])
    return [outputs[first]], [latencies[first]]
