"""Pieces both engines share: the chat encoding and the stream both build on, collecting
streamed chunks into outputs, the checks of a request and of a LoRA directory, the smoke
check's prompt and its judgement of a degenerate answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from common.chat_encoding import encode_chat
from schemas.events import ChatMessage
from serving.engines.protocol import (
    BASE,
    AdapterRejected,
    EngineFailure,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    UnknownAdapter,
)

logger = logging.getLogger(__name__)

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


class ModelEngine:
    """What both engines that run a model share: their common settings, the chat encoding, the
    streamed generation built on ``_stream`` (the prompt token count first, then the chunks of
    all n answers as they decode), and the smoke check."""

    def __init__(
        self,
        model_dir: str | Path,
        dtype: str,
        max_batch_size: int,
        max_queue: int | None,
        smoke_tokens: int,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.dtype = dtype
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue if max_queue is not None else 4 * max_batch_size
        self.smoke_tokens = smoke_tokens
        self._base_smoke = BaseSmokeAnswer(smoke_tokens)
        self._tokenizer: Any = None  # caller side (chat template, prompt tokens)

    def _stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk | int]:
        raise NotImplementedError

    async def generate(self, request: GenerationRequest) -> list[GenerationOutput]:
        raise NotImplementedError

    async def _smoke_answer(self, request: GenerationRequest) -> str:
        """The smoke prompt's answer (an engine may refuse the adapter on more evidence)."""
        return (await self.generate(request))[0].text

    async def smoke_check(self, version: str) -> None:
        try:
            text = await self._smoke_answer(smoke_request(version, self.smoke_tokens))
        except (EngineFailure, UnknownAdapter) as exc:
            raise AdapterRejected(f"smoke check of {version} failed: {exc}") from exc
        problem = degenerate(text)
        if problem and degenerate(await self._base_smoke.get(self._smoke_answer)) is None:
            raise AdapterRejected(f"smoke check of {version}: {problem}: {text!r}")
        logger.info("smoke check of %s passed: %r", version, text)

    def count_prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self._encode(messages))

    def _encode(self, messages: list[ChatMessage]) -> list[int]:
        return encode_chat(self._tokenizer, messages)

    async def generate_stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._stream(request):
            if not isinstance(chunk, int):
                yield chunk


def smoke_request(adapter: str, max_tokens: int) -> GenerationRequest:
    """The smoke prompt, answered greedily by ``adapter`` ahead of queued requests."""
    return GenerationRequest(
        messages=SMOKE_MESSAGES,
        max_tokens=max_tokens,
        temperature=0.0,
        adapter=adapter,
        priority=True,
    )


def check_prompt_fits(prompt: list[int], context: int) -> None:
    """Refuse a prompt that leaves no token of room in the model's context."""
    if len(prompt) + 1 >= context:
        raise InvalidRequest(
            f"prompt of {len(prompt)} tokens leaves no room in the model's {context}-token context"
        )


def lora_config(path: Path) -> Any:
    """The PEFT config of a LoRA adapter directory; AdapterRejected for anything else."""
    from peft import LoraConfig, PeftConfig

    try:
        config = PeftConfig.from_pretrained(str(path))
    except Exception as exc:
        raise AdapterRejected(f"{path}: not a PEFT adapter directory ({exc})") from exc
    if not isinstance(config, LoraConfig):
        raise AdapterRejected(f"{path}: expected a LoRA adapter, got {type(config).__name__}")
    return config


def non_finite_weights(path: Path) -> list[str]:
    """Names of the tensors in a PEFT adapter directory that hold NaN or infinity (weights
    saved as ``adapter_model.safetensors`` or, in older PEFT, ``adapter_model.bin``)."""
    import torch

    safetensors, pickled = path / "adapter_model.safetensors", path / "adapter_model.bin"
    if safetensors.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(safetensors))
    elif pickled.is_file():
        tensors = torch.load(pickled, map_location="cpu", weights_only=True)
    else:
        raise AdapterRejected(f"{path}: no adapter_model.safetensors or adapter_model.bin")
    return [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]


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

    async def get(self, answer: Callable[[GenerationRequest], Awaitable[str]]) -> str:
        if self._text is None:
            self._text = await answer(smoke_request(BASE, self.max_tokens))
        return self._text
