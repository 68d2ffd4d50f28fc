"""The engine protocol: what the HTTP layer and the adapter manager need from a generator.

Implementations: ``transformers`` (CPU default: one engine loop owns the model and batches
concurrent requests, PEFT multi-adapter), ``vllm`` (AsyncLLM + LoRARequest per version), and a
fake engine for HTTP-layer tests. Adapter versions are immutable names such as "policy@v17";
``BASE`` names the base model with no adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from schemas.events import ChatMessage
from schemas.versions import BASE

__all__ = ["BASE"]  # re-exported: the engines and the HTTP layer name the base model by it

FinishReason = Literal["stop", "length"]


class AdapterRejected(Exception):
    """An adapter failed to load or failed its smoke check (files, base model, non-finite)."""


class EngineOverloaded(Exception):
    """The engine queue is full; the HTTP layer answers 503/429."""


class UnknownAdapter(ValueError):
    """The request names an adapter version that is not loaded (or is being unloaded)."""


class InvalidRequest(ValueError):
    """The engine cannot serve this request as asked (prompt too long for the model's context,
    more answers than one batch holds); the HTTP layer answers 400."""


class EngineFailure(RuntimeError):
    """Generation failed inside the engine (non-finite logits, engine stopped); answer 500/503."""


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[ChatMessage]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    # Adapter version to generate with; BASE for the plain base model.
    adapter: str = BASE
    # Ahead of queued user requests (an adapter's smoke check: a swap must not wait behind
    # the traffic it is about to serve).
    priority: bool = False


@dataclass(frozen=True)
class GenerationOutput:
    index: int
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    adapter: str


@dataclass(frozen=True)
class GenerationChunk:
    """One streamed increment for choice ``index``; ``finish_reason`` set on its last chunk."""

    index: int
    delta: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0


@dataclass
class EngineStats:
    queue_depth: int = 0
    running: int = 0
    last_batch_size: int = 0
    tokens_generated_total: int = 0
    # Largest number of sequences decoded together in one step since start.
    max_batch_size_seen: int = 0


@runtime_checkable
class Engine(Protocol):
    name: str

    async def start(self) -> None:
        """Load the base model; ready to generate with BASE when it returns."""

    async def stop(self) -> None:
        """Finish or cancel in-flight work and release the model."""

    async def generate(self, request: GenerationRequest) -> list[GenerationOutput]:
        """``request.n`` answers (exactly n, in index order).

        Raises EngineOverloaded (queue full), UnknownAdapter, InvalidRequest, EngineFailure."""
        ...

    def generate_stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the answers' text increments as they are decoded."""
        ...

    async def load_adapter(self, version: str, path: Path) -> None:
        """Make ``version`` (a PEFT LoRA directory) available; raises AdapterRejected."""

    async def unload_adapter(self, version: str) -> None: ...

    async def smoke_check(self, version: str) -> None:
        """Short generation with ``version``: raises AdapterRejected on non-finite logits or an
        empty/degenerate answer."""

    def loaded_adapters(self) -> list[str]: ...

    def stats(self) -> EngineStats: ...

    def count_prompt_tokens(self, messages: list[ChatMessage]) -> int: ...
