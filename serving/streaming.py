"""Server-sent events for ``stream: true`` chat requests, OpenAI's chunk format.

Each engine request of the plan (one per adapter version) streams on its own task into one
queue; chunks are renumbered from canonical to API order (``shown_order``) so a pair streams
both answers side by side. The first increment is awaited before the HTTP response starts, so
overload or a bad adapter still gets a proper status code; a fault after that is sent as an
``error`` event (which the openai client raises). Once every answer has finished, the answers
go to the ``on_finished`` callable the stream was given (the handler's one output path,
``ChatHandler.finish_answers``: pairing rules, served event), as a non-streamed request's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from serving.api_models import ChatCompletionChunk, ChunkChoice, Delta, Usage
from serving.chat_job import ChatJob
from serving.engines.protocol import (
    Engine,
    FinishReason,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
)
from serving.errors import error_body

logger = logging.getLogger(__name__)
_END = object()


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


async def _merged(engine: Engine, job: ChatJob) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """(canonical index, chunk) from every engine request of the plan, as they arrive."""
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump(request: GenerationRequest, offset: int) -> None:
        try:
            async for chunk in engine.generate_stream(request):
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


@dataclass
class _Answer:
    """One answer as its chunks arrive: what its GenerationOutput will hold."""

    adapter: str
    text: str = ""
    finish: FinishReason | None = None
    completion_tokens: int = 0
    latency: float = 0.0

    def output(self, index: int, prompt_tokens: int) -> GenerationOutput:
        return GenerationOutput(
            index=index,
            text=self.text,
            finish_reason=self.finish or "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=self.completion_tokens,
            adapter=self.adapter,
        )


# Called once every answer has finished: (outputs, latencies), canonical order.
OnFinished = Callable[[list[GenerationOutput], list[float]], object]


class ChatStream:
    """Builds the SSE body for one job; its finished answers go to ``on_finished``.

    ``pair_token`` and ``response_tokens`` (canonical order) are the signed ids the client
    gets in every chunk; the stream only sends them."""

    def __init__(
        self,
        engine: Engine,
        job: ChatJob,
        pair_token: str | None,
        response_tokens: list[str],
        on_finished: OnFinished,
    ) -> None:
        self.engine = engine
        self.job = job
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.pair_token = pair_token
        self.response_tokens = response_tokens
        self.on_finished = on_finished
        self.answers = [_Answer(adapter) for adapter in job.plan.canonical_adapters()]
        self._source = _merged(engine, job)

    async def first(self) -> tuple[int, GenerationChunk] | None:
        """Await the first increment (raises overload/adapter errors before headers go out)."""
        try:
            return await self._source.__anext__()
        except StopAsyncIteration:
            return None

    def _sse_chunk(self, chunk: ChatCompletionChunk) -> str:
        return _sse(chunk.model_dump_json(exclude_none=True))

    def _chunk(self, canonical: int, delta: Delta, finish: str | None = None) -> str:
        choice = ChunkChoice(
            index=self.job.api_index(canonical),
            delta=delta,
            finish_reason=finish,
            response_id=self.response_tokens[canonical],
            adapter_version=self.answers[canonical].adapter,
        )
        return self._sse_chunk(
            ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.job.model,
                choices=[choice],
                pair_id=self.pair_token,
            )
        )

    def _record(self, canonical: int, chunk: GenerationChunk) -> str:
        answer = self.answers[canonical]
        answer.text += chunk.delta
        answer.completion_tokens = max(answer.completion_tokens, chunk.completion_tokens)
        if chunk.finish_reason is not None:
            answer.finish = chunk.finish_reason
            answer.latency = time.perf_counter() - self.job.started
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
        prompt_tokens = self.engine.count_prompt_tokens(self.job.messages)
        outputs = [a.output(i, prompt_tokens) for i, a in enumerate(self.answers)]
        self.on_finished(outputs, [a.latency for a in self.answers])
        if self.job.body.stream_options and self.job.body.stream_options.include_usage:
            yield self._sse_chunk(
                ChatCompletionChunk(
                    id=self.id,
                    created=self.created,
                    model=self.job.model,
                    choices=[],
                    pair_id=self.pair_token,
                    usage=Usage.counted(prompt_tokens, [a.completion_tokens for a in self.answers]),
                )
            )
        yield _sse("[DONE]")
