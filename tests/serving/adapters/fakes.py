"""A recording engine for adapter-manager tests: obeys the Engine protocol, generates nothing
real, and fails a request whose adapter is not loaded (as the real engines do)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from schemas.events import ChatMessage, EventBase
from serving.engines.protocol import (
    BASE,
    AdapterRejected,
    EngineStats,
    GenerationChunk,
    GenerationOutput,
    GenerationRequest,
)


class RecordingEngine:
    name = "recording"

    def __init__(self, generate_seconds: float = 0.0) -> None:
        self.generate_seconds = generate_seconds
        self.adapters: dict[str, Path] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_smoke: set[str] = set()
        self.in_use: dict[str, int] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def generate(self, request: GenerationRequest) -> list[GenerationOutput]:
        if request.adapter != BASE and request.adapter not in self.adapters:
            raise LookupError(f"adapter {request.adapter} is not loaded")
        self.in_use[request.adapter] = self.in_use.get(request.adapter, 0) + 1
        try:
            await asyncio.sleep(self.generate_seconds)
            if request.adapter != BASE and request.adapter not in self.adapters:
                raise RuntimeError(f"adapter {request.adapter} unloaded while in use")
        finally:
            self.in_use[request.adapter] -= 1
        return [GenerationOutput(i, "ok", "stop", 1, 1, request.adapter) for i in range(request.n)]

    async def generate_stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        for out in await self.generate(request):
            yield GenerationChunk(out.index, out.text, out.finish_reason, 1)

    async def load_adapter(self, version: str, path: Path) -> None:
        self.calls.append(("load", version))
        if not (Path(path) / "adapter_config.json").is_file():
            raise AdapterRejected(f"{path} is not a PEFT adapter")
        self.adapters[version] = Path(path)

    async def unload_adapter(self, version: str) -> None:
        self.calls.append(("unload", version))
        while self.in_use.get(version, 0):  # drain, like the real engines
            await asyncio.sleep(0.001)
        self.adapters.pop(version, None)

    async def smoke_check(self, version: str) -> None:
        self.calls.append(("smoke", version))
        if version in self.fail_smoke:
            raise AdapterRejected(f"smoke check of {version}: non-finite logits")

    def loaded_adapters(self) -> list[str]:
        return list(self.adapters)

    def stats(self) -> EngineStats:
        return EngineStats()

    def count_prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return len(messages)


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[EventBase] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def emit(self, event: EventBase) -> None:
        self.events.append(event)

    def counts(self) -> dict[str, int]:
        return {"produced": len(self.events), "spooled": 0, "dropped": 0}
