"""Adapter manager: the serving alias (``serving.adapters.aliases``) kept in step with the
adapters topic, and its lifecycle.

Sources of change: the admin API (which also emits ``adapter.promoted`` /
``adapter.rolled_back`` so other replicas follow) and the adapters topic (followed, never
re-emitted, so no loops). On start the whole topic is read (``serving.adapters.follower``) and
the latest promoted version that passes its checks is loaded; ``ready()`` turns true then. If
the topic cannot be read in time, the store's promoted record serves (degraded) until it can.

This module is the reconciliation with the topic: replaying its history as a fold at start
(``_catch_up``), then applying each new ``adapter.published/promoted/rolled_back`` event
(``_apply``); every change it makes goes through the state machine's transitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import cached_property

from schemas.events import AdapterPromoted, AdapterPublished, AdapterRolledBack, EventBase
from schemas.versions import AdapterVersion
from serving.adapters import metrics
from serving.adapters.aliases import AdapterAliases
from serving.adapters.errors import AdapterNotFound, AdapterRefused, AdapterStateError
from serving.adapters.follower import TopicFollower
from serving.engines.protocol import BASE

logger = logging.getLogger(__name__)


class AdapterManager(AdapterAliases):
    """The alias state machine, started, following the adapters topic (module docstring)."""

    # The following state. Constructed as AdapterAliases is (no __init__ of its own); the
    # defaults are replaced per instance as the topic is read.
    _caught_up = False  # the adapters topic has been read to its end once
    _degraded = False  # serving without the topic (see _serve_from_store)
    _worker: asyncio.Task[None] | None = None
    _follower: TopicFollower | None = None

    @cached_property
    def _ready(self) -> asyncio.Event:
        return asyncio.Event()

    @cached_property
    def _inbox(self) -> asyncio.Queue[tuple[list[EventBase], bool]]:
        return asyncio.Queue()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._open_store()
        if not (self._settings.adapter_follow_topic and self._settings.kafka_enabled):
            self._ready.set()
            return
        loop = asyncio.get_running_loop()
        inbox = self._inbox  # made here, on the loop, before the follower's thread uses it
        self._worker = loop.create_task(self._process_inbox())

        def on_batch(events: list[EventBase], caught_up: bool) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, (events, caught_up))

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
