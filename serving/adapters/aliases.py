"""The serving alias: which immutable adapter version serves, the canary beside it, the
versions before it (for rollback), and each loaded version's state (loading, loaded,
unloading). ``AdapterAliases`` is the state machine; ``serving.adapters.manager`` adds the
lifecycle and the following of the adapters topic on top of it.

Adapter versions are immutable (docs/architecture.md): ``policy@v17`` is never overwritten; "which
version serves" is an alias flipped atomically after the new version loaded and passed a smoke
generation; the previous version stays loaded for instant rollback. The pattern is vLLM's
(``serving_models.py``: one lock around adapter loading, LoRA ids never reused) plus a
blue/green alias flip.

A swap: fetch + verify (``serving.adapters.store``) -> ``engine.load_adapter`` beside the
serving version -> ``engine.smoke_check`` -> flip ``self._serving`` (one attribute assignment
under the manager lock; readers take no lock, they read one reference). Requests that already
read the old version keep generating with it: it stays loaded, and versions beyond
``adapter_keep_loaded`` are unloaded only after ``adapter_unload_grace_seconds``, and then the
engine drains that version's running requests before dropping it. Every transition (promote,
rollback, canary, evict, unload) is in this one class, so its invariants can be read together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.events import AdapterPromoted, AdapterRolledBack, EventBase
from serving.adapters import metrics
from serving.adapters.errors import (
    AdapterError,
    AdapterNotFound,
    AdapterRefused,
    AdapterStateError,
)
from serving.adapters.store import AdapterFetcher, VerifiedAdapter, parse_version
from serving.api_models import AdapterInfo, ManifestSummary
from serving.engines.protocol import BASE, AdapterRejected, Engine
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

# Who asked for a change: the admin API (the only source whose changes are announced on the
# topic), the topic itself, the topic's catch-up at start, or the store's record (degraded).
Source = Literal["admin", "topic", "catchup", "store"]


@dataclass
class _Loaded:
    adapter: VerifiedAdapter
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    unloading: bool = False


def _default_base_hash(settings: ServingSettings) -> str:
    from common.embedded_model import model_dir_sha256, resolve_model_dir

    return model_dir_sha256(resolve_model_dir(settings.model_dir))


class AdapterAliases:
    """Which version serves, and the loaded versions behind it (module docstring)."""

    def __init__(
        self,
        settings: ServingSettings,
        engine: Engine,
        event_logger: Any | None,
        base_model_sha256: str | Callable[[], str] | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._events = event_logger
        self._base_hash = base_model_sha256
        self._fetcher: AdapterFetcher | None = None
        self._serving = BASE
        self._canary: str | None = None
        self._history: list[str] = []  # previously serving versions, newest last
        self._loaded: dict[str, _Loaded] = {}
        self._known_uris: dict[str, tuple[str, str | None]] = {}  # from adapter.published
        self._seen_events: set[str] = set()
        # Two locks: _lock guards the alias state (serving, canary, history) and is only ever
        # held for instant changes, so a rollback or a promote of a loaded version never waits
        # behind a load; _load_lock serialises the slow engine work (fetch, load, smoke check,
        # unload drains) that happens beside it.
        self._lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # delayed unloads
        self.refusals: dict[str, int] = {}

    async def _open_store(self) -> None:
        """The fetcher that verifies versions against this base model (hashed off the loop)."""
        base_hash = self._base_hash
        if base_hash is None:
            base_hash = await asyncio.to_thread(_default_base_hash, self._settings)
        elif callable(base_hash):
            base_hash = await asyncio.to_thread(base_hash)
        self._fetcher = AdapterFetcher(
            self._settings.adapter_store,
            self._settings.adapter_name,
            self._settings.adapter_cache_dir,
            base_hash,
        )

    # ---- reads (no lock: one attribute read each) ----------------------------------------
    def serving_version(self) -> str:
        return self._serving

    def canary_version(self) -> str | None:
        return self._canary

    def list(self) -> list[AdapterInfo]:
        previous = self._history[-1] if self._history else None
        out = []
        for version in [BASE, *self._loaded]:
            entry = self._loaded.get(version)
            state: Literal["serving", "canary", "previous", "loaded", "unloading"]
            if version == self._serving:
                state = "serving"
            elif version == self._canary:
                state = "canary"
            elif entry is not None and entry.unloading:
                state = "unloading"
            elif version == previous:
                state = "previous"
            else:
                state = "loaded"
            out.append(
                AdapterInfo(
                    version=version,
                    state=state,
                    loaded_at=entry.loaded_at if entry else None,
                    uri=entry.adapter.uri if entry else None,
                    manifest=ManifestSummary.of(entry.adapter.manifest) if entry else None,
                    is_serving=version == self._serving,
                    is_canary=version == self._canary,
                )
            )
        return out

    # ---- admin API ---------------------------------------------------------------------------
    async def load(self, version: str, uri: str | None = None) -> AdapterInfo:
        await self._ensure_loaded(version, uri)
        return self._info(version)

    async def promote(self, version: str) -> None:
        await self._ensure_loaded(version)  # the slow part, outside the state lock
        async with self._lock:
            await self._promote(version, "admin")

    async def rollback(self) -> str:
        async with self._lock:
            return await self._rollback("admin", None, "operator rollback")

    def set_canary(self, version: str | None) -> None:
        if version is not None and version != BASE and self._usable(version) is None:
            raise AdapterNotFound("not_loaded", f"{version} is not loaded; load it first")
        self._canary = version
        self._evict()

    # ---- the swap ----------------------------------------------------------------------------
    async def _ensure_loaded(
        self, version: str, uri: str | None = None, manifest_sha256: str | None = None
    ) -> None:
        if version == BASE or self._usable(version) is not None:
            return
        async with self._load_lock:
            if self._usable(version) is not None:
                return  # loaded by a concurrent caller meanwhile
            await self._fetch_and_load(version, uri, manifest_sha256)

    async def _fetch_and_load(
        self, version: str, uri: str | None, manifest_sha256: str | None
    ) -> None:
        assert self._fetcher is not None, "start() first"
        parse_version(version, self._settings.adapter_name)
        if uri is None and version in self._known_uris:
            uri, manifest_sha256 = self._known_uris[version]
        try:
            try:
                with metrics.LOAD_STAGE_SECONDS.labels("fetch").time():
                    adapter = await asyncio.to_thread(
                        self._fetcher.fetch, version, uri, manifest_sha256
                    )
            except AdapterError:
                raise
            except Exception as exc:  # store unreachable, permissions, bad URL: a clear 422
                raise AdapterRefused("fetch_failed", f"{version} from {uri}: {exc!r}") from exc
            await self._load_into_engine(adapter)
        except AdapterRefused as exc:
            self._count_refusal(exc.reason)
            logger.warning("adapter %s refused: %s", version, exc)
            raise

    async def _load_into_engine(self, adapter: VerifiedAdapter) -> None:
        version = adapter.version
        pending = self._loaded.get(version)
        if pending is not None and pending.unloading:
            # Still draining from an earlier eviction: let it finish, then load afresh.
            await self._engine.unload_adapter(version)
            self._loaded.pop(version, None)
        try:
            with metrics.LOAD_STAGE_SECONDS.labels("engine_load").time():
                await self._engine.load_adapter(version, adapter.path)
        except AdapterRejected as exc:
            raise AdapterRefused("load_failed", f"{version}: {exc}") from exc
        try:
            with metrics.LOAD_STAGE_SECONDS.labels("smoke_check").time():
                await self._engine.smoke_check(version)
        except AdapterRejected as exc:
            await self._engine.unload_adapter(version)
            raise AdapterRefused("smoke_check_failed", f"{version}: {exc}") from exc
        self._loaded[version] = _Loaded(adapter)
        metrics.LOADED.set(len(self._loaded))
        logger.info("adapter %s loaded from %s", version, adapter.uri)

    async def _promote(
        self,
        version: str,
        source: Source,
        uri: str | None = None,
        manifest_sha256: str | None = None,
    ) -> None:
        if version == self._serving:
            return
        started = time.perf_counter()
        await self._ensure_loaded(version, uri, manifest_sha256)
        previous = self._flip(version)
        metrics.SWAPS.labels("promote", source).inc()
        metrics.SWAP_SECONDS.observe(time.perf_counter() - started)
        logger.info("serving %s (was %s; source %s)", version, previous, source)
        if source == "admin":
            self._emit(
                AdapterPromoted(
                    model_name=self._settings.model_name, version=version, previous_version=previous
                )
            )

    async def _rollback(self, source: Source, target: str | None, reason: str) -> str:
        current = self._serving
        if target is None:
            candidates = [
                v
                for v in reversed(self._history)
                if v != current and (v == BASE or self._usable(v) is not None)
            ]
            if not candidates:
                raise AdapterStateError("no_previous", "nothing to roll back to")
            target = candidates[0]
        if target == current:
            return current
        started = time.perf_counter()
        await self._ensure_loaded(target)
        # The version rolled back from must not come back by a later plain rollback.
        self._history = [v for v in self._history if v not in (target, current)]
        self._serving = target
        metrics.SWAPS.labels("rollback", source).inc()
        metrics.SWAP_SECONDS.observe(time.perf_counter() - started)
        logger.info("rolled back from %s to %s (source %s)", current, target, source)
        self._evict()
        if source == "admin":
            self._emit(
                AdapterRolledBack(
                    model_name=self._settings.model_name,
                    from_version=current,
                    to_version=target,
                    reason=reason,
                )
            )
        return target

    def _flip(self, version: str) -> str:
        previous = self._serving
        self._history = [v for v in self._history if v != version] + [previous]
        self._serving = version  # the atomic alias flip: one reference assignment
        if self._canary == version:
            self._canary = None
        self._evict()
        return previous

    # ---- eviction (never a version in use) ------------------------------------------------
    def _usable(self, version: str) -> _Loaded | None:
        entry = self._loaded.get(version)
        return entry if entry is not None and not entry.unloading else None

    def _evict(self) -> None:
        keep = self._settings.adapter_keep_loaded
        protected = {self._serving, self._canary}
        # Newest first: serving, canary, then previous versions, then loaded-not-promoted.
        order = [
            v
            for v in [self._serving, self._canary, *reversed(self._history)]
            if v and v != BASE and v in self._loaded
        ]
        order += sorted(
            (v for v in self._loaded if v not in order),
            key=lambda v: self._loaded[v].loaded_at,
            reverse=True,
        )
        active = [v for v in order if not self._loaded[v].unloading]
        for version in active[keep:]:
            if version in protected:
                continue
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop: evict on the next change
                return
            self._loaded[version].unloading = True
            task = loop.create_task(self._unload_later(version))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _unload_later(self, version: str) -> None:
        # Requests that read the alias just before a flip may still be about to use it.
        await asyncio.sleep(self._settings.adapter_unload_grace_seconds)
        # The drain can take as long as the version's longest running answer: under the load
        # lock, never the state lock.
        async with self._load_lock:
            entry = self._loaded.get(version)
            if entry is None or not entry.unloading:
                return
            try:
                await self._engine.unload_adapter(version)  # drains its running requests
            except Exception:
                logger.exception("unloading %s failed; it stays resident", version)
                entry.unloading = False
                return
            self._loaded.pop(version, None)
            self._history = [v for v in self._history if v != version]
            metrics.LOADED.set(len(self._loaded))
            logger.info("adapter %s unloaded", version)

    # ---- canary ------------------------------------------------------------------------
    def _start_canary(self, version: str) -> None:
        if version == self._serving:
            return
        self._canary = version
        logger.info("canary %s beside serving %s", version, self._serving)
        self._evict()

    def _end_canary(self, reason: str) -> None:
        logger.info(
            "canary %s rolled back (%s); serving stays %s", self._canary, reason, self._serving
        )
        self._canary = None
        self._evict()

    # ---- helpers -------------------------------------------------------------------------
    def _info(self, version: str) -> AdapterInfo:
        return next(a for a in self.list() if a.version == version)

    def _emit(self, event: EventBase) -> None:
        self._seen_events.add(event.event_id)  # our own event coming back is not re-applied
        if self._events is not None:
            self._events.emit(event)

    def _count_refusal(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        metrics.REFUSALS.labels(reason).inc()
