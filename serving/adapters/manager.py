"""Adapter manager: hot-swap of immutable adapter versions behind a serving alias.

Why one file (over 400 lines): one state machine (alias, loaded versions, in-flight counts) under
one lock; its transitions must be read together to see that each keeps the invariants.

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
engine drains that version's running requests before dropping it.

Sources of change: the admin API (which also emits ``adapter.promoted`` /
``adapter.rolled_back`` so other replicas follow) and the adapters topic (followed, never
re-emitted, so no loops). On start the whole topic is read (``serving.adapters.follower``) and
the latest promoted version that passes its checks is loaded; ``ready()`` turns true then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.events import AdapterPromoted, AdapterPublished, AdapterRolledBack, EventBase
from schemas.versions import AdapterVersion
from serving.adapters import metrics
from serving.adapters.errors import (
    AdapterError,
    AdapterNotFound,
    AdapterRefused,
    AdapterStateError,
)
from serving.adapters.follower import TopicFollower
from serving.adapters.store import AdapterFetcher, VerifiedAdapter, parse_version
from serving.api_models import AdapterInfo, ManifestSummary
from serving.engines.protocol import BASE, AdapterRejected, Engine
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

Source = Literal["admin", "topic", "catchup", "store"]


@dataclass
class _Loaded:
    adapter: VerifiedAdapter
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    unloading: bool = False


def _default_base_hash(settings: ServingSettings) -> str:
    from common.embedded_model import model_dir_sha256, resolve_model_dir

    return model_dir_sha256(resolve_model_dir(settings.model_dir))


class AdapterManager:
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
        self._ready = asyncio.Event()
        self._caught_up = False  # the adapters topic has been read to its end once
        self._degraded = False  # serving without the topic (see _serve_from_store)
        self._inbox: asyncio.Queue[tuple[list[EventBase], bool]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._follower: TopicFollower | None = None
        self.refusals: dict[str, int] = {}

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
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
        if not (self._settings.adapter_follow_topic and self._settings.kafka_enabled):
            self._ready.set()
            return
        loop = asyncio.get_running_loop()
        self._worker = loop.create_task(self._process_inbox())

        def on_batch(events: list[EventBase], caught_up: bool) -> None:
            loop.call_soon_threadsafe(self._inbox.put_nowait, (events, caught_up))

        self._follower = TopicFollower(
            self._settings.kafka_bootstrap, self._settings.topic_adapters, on_batch
        )
        self._follower.start()
        try:
            await asyncio.wait_for(self._ready.wait(), self._settings.adapter_start_timeout_seconds)
        except TimeoutError:
            await self._serve_from_store()

    async def _serve_from_store(self) -> None:
        """Kafka is unreachable at start-up: serve the learner's latest promoted version that
        the adapter store records (or the base) rather than nothing, report degraded, and keep
        following; the topic's catch-up converges when the broker is back."""
        assert self._fetcher is not None
        logger.warning(
            "adapters topic not caught up after %.0fs; serving from the adapter store "
            "(degraded) and still trying the topic",
            self._settings.adapter_start_timeout_seconds,
        )
        try:
            record = await asyncio.to_thread(self._fetcher.promoted)
        except Exception as exc:  # an unreachable store must not keep the replica down
            logger.warning("adapter store unreadable (%s); serving the base", exc)
            record = None
        async with self._lock:
            if self._caught_up:
                return  # the topic arrived meanwhile
            if record is not None and record.model_name == self._settings.model_name:
                try:
                    await self._promote(record.version, "store", record.uri, record.manifest_sha256)
                except (AdapterRefused, AdapterNotFound, AdapterStateError) as exc:
                    logger.warning("store's promoted %s not usable (%s)", record.version, exc)
            self._set_degraded(True)
            self._ready.set()
        logger.warning("serving %s without the adapters topic (degraded)", self._serving)

    def _set_degraded(self, degraded: bool) -> None:
        self._degraded = degraded
        metrics.DEGRADED.set(1 if degraded else 0)

    async def stop(self) -> None:
        if self._follower is not None:
            await asyncio.to_thread(self._follower.stop)
            self._follower = None
        for task in [self._worker, *self._tasks]:
            if task is not None:
                task.cancel()
        self._worker = None

    def ready(self) -> bool:
        return self._ready.is_set()

    def degraded(self) -> bool:
        return self._degraded

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

    # ---- following the topic -------------------------------------------------------------
    async def _process_inbox(self) -> None:
        while True:
            events, caught_up = await self._inbox.get()
            try:
                if caught_up and not self._caught_up:
                    await self._catch_up(events)
                    self._caught_up = True
                    if self._degraded:
                        logger.info("adapters topic readable again: no longer degraded")
                    self._set_degraded(False)
                    self._ready.set()
                else:
                    for event in events:
                        await self._apply(event)
            except Exception:
                logger.exception("processing adapter events failed")

    def _relevant(self, event: EventBase) -> bool:
        if getattr(event, "model_name", None) != self._settings.model_name:
            return False
        versions = [getattr(event, a, None) for a in ("version", "from_version", "to_version")]
        return all(v is None or v == BASE or self._ours(v) for v in versions)

    def _ours(self, version: str) -> bool:
        """Whether ``version`` is a version of the family this replica serves."""
        try:
            return AdapterVersion.parse(version).name == self._settings.adapter_name
        except ValueError:
            return False

    async def _catch_up(self, events: Sequence[EventBase]) -> None:
        """Replay the topic's history as a fold; load only the final target (falling back
        through earlier serving versions if it fails its checks), not every intermediate one."""
        chain = [BASE]
        canary: str | None = None  # a canary the topic has not decided yet
        decided = False  # whether the topic says anything about this family at all
        for event in events:
            self._seen_events.add(event.event_id)
            if not self._relevant(event):
                continue
            decided = True
            if isinstance(event, AdapterPublished):
                self._known_uris[event.version] = (event.uri, event.manifest_sha256)
                if event.promote:
                    chain.append(event.version)
                elif event.canary:
                    canary = event.version
            elif isinstance(event, AdapterPromoted):
                chain.append(event.version)
                canary = None if canary == event.version else canary
            elif isinstance(event, AdapterRolledBack):
                if event.from_version == canary:
                    canary = None
                    continue
                chain = [v for v in chain if v != event.from_version] + [event.to_version]
        try:
            await self._fold_chain(chain, decided)
        finally:
            if canary is not None:
                await self._resume_canary(canary)

    async def _resume_canary(self, version: str) -> None:
        async with self._lock:
            try:
                await self._ensure_loaded(version)
                self._start_canary(version)
            except (AdapterRefused, AdapterNotFound, AdapterStateError) as exc:
                logger.warning("catch-up: canary %s not usable (%s)", version, exc)

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

    async def _fold_chain(self, chain: Sequence[str], decided: bool) -> None:
        async with self._lock:
            if not decided:
                # An empty topic (a broker that lost its data) says nothing: keep what the
                # store's record gave a degraded start, if anything.
                logger.info("adapters topic has no history; serving %s", self._serving)
                return
            for target in reversed(chain):
                try:
                    if target != BASE:
                        await self._promote(target, "catchup")
                    elif self._serving != BASE:
                        await self._rollback("catchup", BASE, "the adapters topic says base")
                    logger.info("caught up with the adapters topic: serving %s", self._serving)
                    return
                except (AdapterRefused, AdapterNotFound, AdapterStateError) as exc:
                    logger.warning(
                        "catch-up: %s not usable (%s); trying the one before", target, exc
                    )

    async def _apply(self, event: EventBase) -> None:
        if event.event_id in self._seen_events or not self._relevant(event):
            return
        self._seen_events.add(event.event_id)
        try:
            await self._preload(event)
        except (AdapterRefused, AdapterNotFound, AdapterStateError) as exc:
            logger.warning("%s %s not applied: %s", event.kind, getattr(event, "version", ""), exc)
            return
        async with self._lock:
            try:
                if isinstance(event, AdapterPublished):
                    self._known_uris[event.version] = (event.uri, event.manifest_sha256)
                    if event.promote:
                        await self._promote(
                            event.version, "topic", event.uri, event.manifest_sha256
                        )
                    else:
                        await self._ensure_loaded(event.version, event.uri, event.manifest_sha256)
                        if event.canary:
                            self._start_canary(event.version)
                elif isinstance(event, AdapterPromoted):
                    await self._promote(event.version, "topic")
                elif isinstance(event, AdapterRolledBack):
                    if event.from_version == self._canary:
                        self._end_canary(event.reason)  # the serving version never changed
                    else:
                        await self._rollback("topic", event.to_version, event.reason)
            except (AdapterRefused, AdapterNotFound, AdapterStateError) as exc:
                logger.warning(
                    "%s %s not applied: %s",
                    event.model_dump().get("kind"),
                    getattr(event, "version", ""),
                    exc,
                )

    async def _preload(self, event: EventBase) -> None:
        """Load the version an event is about before taking the state lock (the swap itself
        is then instant, and rollbacks meanwhile do not wait)."""
        if isinstance(event, AdapterPublished):
            self._known_uris[event.version] = (event.uri, event.manifest_sha256)
            await self._ensure_loaded(event.version, event.uri, event.manifest_sha256)
        elif isinstance(event, AdapterPromoted):
            await self._ensure_loaded(event.version)

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
