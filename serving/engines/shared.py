"""Pieces both engines share: collecting streamed chunks into outputs, the smoke check's
prompt and its judgement of a degenerate answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from schemas.events import ChatMessage
from serving.engines.protocol import GenerationChunk, GenerationOutput, GenerationRequest

SMOKE_MESSAGES = [ChatMessage(role="user", content="What is two plus two? Answer briefly.")]


async def collect_outputs(
    request: GenerationRequest, chunks: AsyncIterator[GenerationChunk | int]
) -> list[GenerationOutput]:
    """The n answers of a stream that yields the prompt token count first, then chunks."""
    texts = [""] * request.n
    finals: dict[int, GenerationChunk] = {}
    prompt_tokens = 0
    async for chunk in chunks:
        if isinstance(chunk, int):
            prompt_tokens = chunk
            continue
        texts[chunk.index] += chunk.delta
        if chunk.finish_reason is not None:
            finals[chunk.index] = chunk
    return [
        GenerationOutput(
            index=i,
            text=texts[i],
            finish_reason=finals[i].finish_reason or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=finals[i].completion_tokens,
            adapter=request.adapter,
        )
        for i in range(request.n)
    ]


def degenerate(text: str) -> str | None:
    """Why an answer looks broken, or None: empty, or one character/word repeated throughout."""
    stripped = text.strip()
    if not stripped:
        return "empty answer"
    if len(stripped) >= 8 and len(set(stripped)) == 1:
        return "one character repeated"
    words = stripped.split()
    if len(words) >= 6 and len(set(words)) == 1:
        return "one word repeated"
    return None


class BaseSmokeAnswer:
    """The base model's greedy answer to the smoke prompt, computed once when first needed.

    A degenerate adapter answer is evidence against the adapter only when the base answers the
    same prompt sensibly: a random test model is degenerate on its own, and refusing every
    adapter trained on it would say nothing about the adapters.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._text: str | None = None

    async def get(
        self, generate: Callable[[GenerationRequest], Awaitable[list[GenerationOutput]]]
    ) -> str:
        if self._text is None:
            request = GenerationRequest(
                messages=SMOKE_MESSAGES, max_tokens=self.max_tokens, temperature=0.0, priority=True
            )
            self._text = (await generate(request))[0].text
        return self._text
