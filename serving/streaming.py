"""Server-sent events for ``stream: true`` chat requests, OpenAI's chunk format.

Each engine request of the plan (one per adapter version) streams on its own task into one
queue; chunks are renumbered from canonical to API order (``shown_order``) so a pair streams
both answers side by side. The first increment is awaited before the HTTP response starts, so
overload or a bad adapter still gets a proper status code; a fault after that is sent as an
``error`` event (which the openai client raises). The served event is emitted once every
answer has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from serving.chat import ChatJob, drop_comparison_if_same, emit_served, pair_token
from serving.deps import Services
from serving.engines.protocol import GenerationChunk, GenerationOutput, GenerationRequest
from serving.errors import error_body
from serving.protocol import ChatCompletionChunk, ChunkChoice, Delta, Usage

logger = logging.getLogger(__name__)
_END = object()


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


async def _merged(
    services: Services,
    job: ChatJob,
) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """(canonical index, chunk) from every engine request of the plan, as they arrive."""
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump(request: GenerationRequest, offset: int) -> None:
        try:
            async for chunk in services.engine.generate_stream(request):
                await queue.put((offset + chunk.index, chunk))
        except Exception as exc:
            await queue.put(exc)
        finally:
            await queue.put(_END)

    offsets = [sum(r.n for r in job.plan.requests[:i]) for i in range(len(job.plan.requests))]
    tasks = [
        asyncio.create_task(pump(r, o)) for r, o in zip(job.plan.requests, offsets, strict=True)
    ]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class ChatStream:
    """Builds the SSE body for one job and, at its end, the served event."""

    def __init__(self, services: Services, job: ChatJob) -> None:
        self.services = services
        self.job = job
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.pair_id = pair_token(services, job)
        adapters = job.plan.canonical_adapters()
        self.adapters = adapters
        self.response_tokens = [
            services.signer.response(rid, job.pair_id, job.uhash) for rid in job.response_ids
        ]
        self.texts = [""] * len(adapters)
        self.finish: list[str | None] = [None] * len(adapters)
        self.completion_tokens = [0] * len(adapters)
        self.latencies = [0.0] * len(adapters)
        self._source = _merged(services, job)

    async def first(self) -> tuple[int, GenerationChunk] | None:
        """Await the first increment (raises overload/adapter errors before headers go out)."""
        try:
            return await self._source.__anext__()
        except StopAsyncIteration:
            return None

    def _chunk(self, canonical: int, delta: Delta, finish: str | None = None) -> str:
        choice = ChunkChoice(
            index=self.job.api_index(canonical),
            delta=delta,
            finish_reason=finish,
            response_id=self.response_tokens[canonical],
            adapter_version=self.adapters[canonical],
        )
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=[choice],
            pair_id=self.pair_id,
        )
        return _sse(chunk.model_dump_json(exclude_none=True))

    def _record(self, canonical: int, chunk: GenerationChunk) -> str:
        self.texts[canonical] += chunk.delta
        self.completion_tokens[canonical] = max(
            self.completion_tokens[canonical], chunk.completion_tokens
        )
        if chunk.finish_reason is not None:
            self.finish[canonical] = chunk.finish_reason
            self.latencies[canonical] = time.perf_counter() - self.job.started
        return self._chunk(canonical, Delta(content=chunk.delta), chunk.finish_reason)

    async def body(self, first: tuple[int, GenerationChunk] | None) -> AsyncIterator[str]:
        for canonical in self.job.plan.shown_order:
            yield self._chunk(canonical, Delta(role="assistant", content=""))
        try:
            if first is not None:
                yield self._record(*first)
            async for canonical, chunk in self._source:
                yield self._record(canonical, chunk)
        except Exception:
            logger.exception("stream %s failed mid-way", self.id)
            yield _sse(json.dumps(error_body(500, "generation failed", code="internal_error")))
            return
        self._emit()
        if self.job.body.stream_options and self.job.body.stream_options.include_usage:
            yield self._usage()
        yield _sse("[DONE]")

    def _outputs(self) -> list[GenerationOutput]:
        prompt_tokens = self.services.engine.count_prompt_tokens(self.job.messages)
        return [
            GenerationOutput(
                index=i,
                text=self.texts[i],
                finish_reason=self.finish[i] or "length",  # type: ignore[arg-type]
                prompt_tokens=prompt_tokens,
                completion_tokens=self.completion_tokens[i],
                adapter=self.adapters[i],
            )
            for i in range(len(self.texts))
        ]

    def _emit(self) -> None:
        # The pair id went out with the first chunk; identical answers are still logged as
        # plain answers, and a vote on them never finds its pair (the learner expires it).
        outputs = self._outputs()
        drop_comparison_if_same(self.job, outputs)
        emit_served(self.services, self.job, outputs, self.latencies)

    def _usage(self) -> str:
        prompt = self.services.engine.count_prompt_tokens(self.job.messages)
        completion = sum(self.completion_tokens)
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.job.model,
            choices=[],
            pair_id=self.pair_id,
            usage=Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            ),
        )
        return _sse(chunk.model_dump_json(exclude_none=True))
