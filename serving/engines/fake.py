"""A fake engine that obeys ``serving.engines.protocol.Engine``, for HTTP-layer tests.

Text is deterministic in (prompt, adapter, choice index, seed, temperature): words drawn from a
small vocabulary by a SHA-256 stream, so tests can tell adapters apart and compare runs without
a model (vLLM tests its OpenAI server against a mock engine the same way). ``token_delay``
seconds per generated word make latency, concurrency and hot-swap behaviour observable;
``max_queue`` bounds concurrent requests and raises ``EngineOverloaded`` past it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from schemas.events import ChatMessage
from serving.engines.protocol import (
    BASE,
    AdapterRejected,
    EngineFailure,
    EngineOverloaded,
    EngineStats,
    FinishReason,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    UnknownAdapter,
)

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
]


def _prompt_text(messages: list[ChatMessage]) -> str:
    return "\n".join(f"{m.role}:{m.content}" for m in messages)


def fake_words(
    messages: list[ChatMessage],
    adapter: str,
    index: int,
    seed: int | None,
    temperature: float,
    max_tokens: int,
) -> tuple[list[str], bool]:
    """The words an answer consists of and whether it hit max_tokens (finish "length")."""
    # Greedy (temperature 0) answers do not depend on the choice index, as with a real model.
    salt = f"{seed}|{0 if temperature == 0 else index}"
    digest = hashlib.sha256(f"{_prompt_text(messages)}|{adapter}|{salt}".encode()).digest()
    natural_length = 3 + digest[0] % 10
    stream = digest
    words: list[str] = []
    while len(words) < min(natural_length, max_tokens):
        stream = hashlib.sha256(stream).digest()
        words.append(_WORDS[stream[0] % len(_WORDS)])
    return words, natural_length > max_tokens


class FakeEngine:
    name = "fake"

    def __init__(
        self, token_delay: float = 0.0, max_queue: int = 1024, start_delay: float = 0.0
    ) -> None:
        self.token_delay = token_delay
        self.max_queue = max_queue
        self.start_delay = start_delay
        self.started = False
        self._adapters: dict[str, Path] = {}
        self._stats = EngineStats()
        self.requests: list[GenerationRequest] = []

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay)
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def _admit(self, request: GenerationRequest) -> None:
        if not self.started:
            raise EngineFailure("engine not started")
        if request.n < 1 or request.max_tokens < 1:
            raise InvalidRequest("n and max_tokens must be at least 1")
        if self._stats.running >= self.max_queue:
            raise EngineOverloaded(f"{self._stats.running} requests in flight")
        if request.adapter != BASE and request.adapter not in self._adapters:
            raise UnknownAdapter(f"adapter {request.adapter!r} is not loaded")
        self.requests.append(request)

    def _answers(self, request: GenerationRequest) -> list[tuple[list[str], bool]]:
        return [
            fake_words(
                request.messages,
                request.adapter,
                i,
                request.seed,
                request.temperature,
                request.max_tokens,
            )
            for i in range(request.n)
        ]

    async def generate(self, request: GenerationRequest) -> list[GenerationOutput]:
        self._admit(request)
        answers = self._answers(request)
        self._stats.running += 1
        self._stats.last_batch_size = request.n
        try:
            await asyncio.sleep(self.token_delay * max(len(w) for w, _ in answers))
        finally:
            self._stats.running -= 1
        prompt_tokens = self.count_prompt_tokens(request.messages)
        outputs = []
        for i, (words, truncated) in enumerate(answers):
            self._stats.tokens_generated_total += len(words)
            outputs.append(
                GenerationOutput(
                    index=i,
                    text=" ".join(words),
                    finish_reason="length" if truncated else "stop",
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(words),
                    adapter=request.adapter,
                )
            )
        return outputs

    async def generate_stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._admit(request)
        answers = self._answers(request)
        self._stats.running += 1
        self._stats.last_batch_size = request.n
        try:
            for step in range(max(len(w) for w, _ in answers)):
                await asyncio.sleep(self.token_delay)
                for i, (words, truncated) in enumerate(answers):
                    if step >= len(words):
                        continue
                    self._stats.tokens_generated_total += 1
                    last = step == len(words) - 1
                    finish: FinishReason | None = None
                    if last:
                        finish = "length" if truncated else "stop"
                    yield GenerationChunk(
                        index=i,
                        delta=(" " if step else "") + words[step],
                        finish_reason=finish,
                        completion_tokens=step + 1,
                    )
        finally:
            self._stats.running -= 1

    async def load_adapter(self, version: str, path: Path) -> None:
        if not Path(path).is_dir():
            raise AdapterRejected(f"adapter directory {path} does not exist")
        self._adapters[version] = Path(path)

    async def unload_adapter(self, version: str) -> None:
        self._adapters.pop(version, None)

    async def smoke_check(self, version: str) -> None:
        if version != BASE and version not in self._adapters:
            raise AdapterRejected(f"adapter {version!r} is not loaded")

    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    def stats(self) -> EngineStats:
        return EngineStats(
            queue_depth=self._stats.queue_depth,
            running=self._stats.running,
            last_batch_size=self._stats.last_batch_size,
            tokens_generated_total=self._stats.tokens_generated_total,
        )

    def count_prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 1 for m in messages)
