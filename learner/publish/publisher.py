"""The one way a version is published: manifest + files into the adapter store, the store's
promoted record, and the events on the adapters topic.

The cycle (``learner.cycle``), a hand-made adapter (``learner sft --publish``) and the canary's
decisions (``learner.daemon``) all go through here, so a version's manifest and announcement
look the same whoever made it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learner.publish.announce import announce_published, produce_event
from learner.publish.manifest import build_manifest
from learner.publish.store import AdapterStore
from schemas.events import AdapterPublished, EventBase
from schemas.versions import AdapterVersion

if TYPE_CHECKING:
    from learner.settings import LearnerSettings


class Publisher:
    def __init__(
        self, settings: LearnerSettings, adapters: AdapterStore, base_sha: Callable[[], str]
    ) -> None:
        self.s = settings
        self.adapters = adapters
        self.base_sha = base_sha

    def version_name(self, number: int) -> str:
        return str(AdapterVersion(self.s.adapter_name, number))

    def next_number(self) -> int:
        """The last visible version + 1."""
        visible = self.adapters.versions()
        return (visible[-1] if visible else 0) + 1

    def store(self, adapter_dir: Path, version: str, **lineage: Any) -> tuple[str, str]:
        """Write the adapter under ``version``; returns (uri, sha256 of its manifest).

        ``lineage``: the manifest fields the settings do not fix (``build_manifest``'s parent,
        reward model, offsets, event count, metrics, config)."""
        manifest = build_manifest(
            adapter_dir=adapter_dir,
            version=version,
            model_name=self.s.model_name,
            base_model=self.s.model_dir,
            base_model_sha256=self.base_sha(),
            **lineage,
        )
        return self.adapters.publish(adapter_dir, manifest)

    def announce(
        self, version: str, uri: str, sha: str, canary: bool = False, event_id: str | None = None
    ) -> None:
        """``adapter.published``: promote it now, or (``canary``) let the votes decide."""
        if not self.s.publish_to_kafka:
            return
        ids = {"event_id": event_id} if event_id else {}
        event = AdapterPublished(
            model_name=self.s.model_name,
            version=version,
            uri=uri,
            manifest_sha256=sha,
            promote=not canary,
            canary=canary,
            **ids,
        )
        announce_published(self.s.kafka_bootstrap, self.s.topic_adapters, event)

    def emit(self, event: EventBase) -> None:
        """Any other event of the adapters topic (the canary's promote / roll back)."""
        if self.s.publish_to_kafka:
            produce_event(self.s.kafka_bootstrap, self.s.topic_adapters, event)

    def record_promoted(self, version: str) -> None:
        """Make ``version`` the store's promoted one (what a starting replica serves)."""
        number = AdapterVersion.parse(version).number
        self.adapters.record_promoted(self.adapters.record_for(number, self.s.model_name))

    def publish_manual(
        self, adapter_dir: Path, metrics: dict[str, float], config: dict[str, Any]
    ) -> str:
        """Publish an adapter made by hand (``learner sft --publish``: the SFT starting adapter)."""
        prev = self.adapters.latest()
        version = self.version_name(self.next_number())
        # Keep the parent's store snapshot: the next cycle's offset ranges start where the
        # last *trained-on* data ended, so no event is attributed twice or dropped.
        snapshot = prev.config.get("store_snapshot") if prev else None
        uri, sha = self.store(
            adapter_dir,
            version,
            parent_version=prev.version if prev else None,
            reward_model_version=None,
            offsets=[],
            event_count=0,
            metrics=metrics,
            config=config | {"manual": True, "store_snapshot": snapshot},
        )
        self.announce(version, uri, sha)
        return version
