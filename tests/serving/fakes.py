"""Small stand-ins for the event logger and the adapter manager (HTTP-layer tests).

They follow the interfaces the HTTP layer codes against (``serving.deps.EventSink`` and
``serving.deps.AdapterControl``); the real classes are tested in ``tests/serving/events`` and
``tests/serving/adapters``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.events import EventBase
from serving.adapters.errors import AdapterStateError
from serving.api_models import AdapterInfo
from serving.engines.protocol import BASE, AdapterRejected, Engine


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[EventBase] = []
        self.started = False
        self.without_topic = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def counts(self) -> dict[str, int]:
        return {"produced": len(self.events), "spooled": 0, "dropped": 0}

    def of_kind(self, kind: str) -> list[Any]:
        return [e for e in self.events if getattr(e, "kind", None) == kind]


class FakeAdapters:
    """Serving alias over the engine's loaded adapters: load, promote, rollback, canary."""

    def __init__(self, engine: Engine, serving: str = BASE) -> None:
        self.engine = engine
        self.serving = serving
        self.previous: str | None = None
        self.canary: str | None = None
        self.started = False
        self.without_topic = False
        self.calls: list[tuple[str, Any]] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def ready(self) -> bool:
        return self.started

    def degraded(self) -> bool:
        return self.without_topic

    def serving_version(self) -> str:
        return self.serving

    def canary_version(self) -> str | None:
        return self.canary

    def list(self) -> list[AdapterInfo]:
        return [
            AdapterInfo(
                version=v,
                state="serving" if v == self.serving else "loaded",
                loaded_at=None,
                is_serving=v == self.serving,
                is_canary=v == self.canary,
            )
            for v in self.engine.loaded_adapters()
        ]

    async def load(self, version: str, uri: str | None = None) -> None:
        self.calls.append(("load", version))
        if uri is None:
            raise LookupError(version)
        await self.engine.load_adapter(version, Path(uri))
        await self.engine.smoke_check(version)

    def _known(self, version: str) -> None:
        if version != BASE and version not in self.engine.loaded_adapters():
            raise LookupError(version)

    async def promote(self, version: str) -> None:
        self.calls.append(("promote", version))
        self._known(version)
        self.previous, self.serving = self.serving, version

    async def rollback(self) -> str:
        self.calls.append(("rollback", None))
        if self.previous is None:
            raise AdapterStateError("no_previous", "nothing to roll back to")
        self.serving, self.previous = self.previous, None
        return self.serving

    def set_canary(self, version: str | None) -> None:
        self.calls.append(("canary", version))
        if version is not None:
            self._known(version)
        self.canary = version


def raise_rejected(message: str) -> None:
    raise AdapterRejected(message)
