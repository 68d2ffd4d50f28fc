"""Publishing an adapter made by hand (``learner sft --publish``): the SFT starting adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learner.publish import build_manifest
from learner.publish.announce import announce_published
from schemas.events import AdapterPublished
from schemas.versions import AdapterVersion


def publish_manual(
    svc: Any, adapter_dir: Path, metrics: dict[str, float], config: dict[str, Any]
) -> str:
    s = svc.settings
    prev = svc.adapters.latest()
    number = (prev.number if prev else 0) + 1
    version = str(AdapterVersion(s.adapter_name, number))
    manifest = build_manifest(
        adapter_dir=adapter_dir,
        model_name=s.model_name,
        version=version,
        parent_version=prev.version if prev else None,
        base_model=s.model_dir,
        base_model_sha256=svc.runner.base_sha(),
        reward_model_version=None,
        offsets=[],
        event_count=0,
        metrics=metrics,
        # Keep the parent's store snapshot: the next cycle's offset ranges start where the
        # last *trained-on* data ended, so no event is attributed twice or dropped.
        config=config
        | {"manual": True, "store_snapshot": prev.config.get("store_snapshot") if prev else None},
    )
    uri, sha = svc.adapters.publish(adapter_dir, manifest)
    if s.publish_to_kafka:
        announce_published(
            s.kafka_bootstrap,
            s.topic_adapters,
            AdapterPublished(
                model_name=s.model_name, version=version, uri=uri, manifest_sha256=sha
            ),
        )
    return version
