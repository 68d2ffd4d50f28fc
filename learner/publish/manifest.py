"""Building the adapter manifest (schemas.manifest.AdapterManifest) for a new version."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

from learner.publish.store import file_digests
from learner.store.records import PartitionPosition, Snapshot
from schemas.manifest import AdapterManifest, OffsetRange


@functools.cache
def code_revision() -> str:
    """``git rev-parse HEAD`` of the source tree if it is a checkout, else the package version."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return "rlhf-service==" + importlib.metadata.version("rlhf-service")
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


def offset_ranges(previous: dict[str, Any] | None, snapshot: Snapshot) -> list[OffsetRange]:
    """Offsets consumed since the previous published version, per partition, half-open.

    ``previous`` is the previous manifest's ``config["store_snapshot"]`` (None for v1). A
    partition whose epoch changed (broker lost its data, see learner.ingest.consumer) starts
    at the new epoch's first offset; the epochs go into the manifest config alongside.
    """
    before: dict[tuple[str, int], PartitionPosition] = {}
    if previous:
        before = {(p.topic, p.partition): p for p in Snapshot.from_json(previous).positions}
    out = []
    for pos in snapshot.positions:
        prev = before.get((pos.topic, pos.partition))
        start = prev.next_offset if prev and prev.epoch == pos.epoch else pos.epoch_start
        out.append(
            OffsetRange(
                topic=pos.topic,
                partition=pos.partition,
                start=min(start, pos.next_offset),
                end=pos.next_offset,
            )
        )
    return out


def build_manifest(
    *,
    adapter_dir: Path,
    model_name: str,
    version: str,
    parent_version: str | None,
    base_model: str,
    base_model_sha256: str,
    reward_model_version: str | None,
    offsets: list[OffsetRange],
    event_count: int,
    metrics: dict[str, float],
    config: dict[str, Any],
) -> AdapterManifest:
    return AdapterManifest(
        model_name=model_name,
        version=version,
        parent_version=parent_version,
        kind="policy",
        base_model=base_model,
        base_model_sha256=base_model_sha256,
        reward_model_version=reward_model_version,
        offsets=offsets,
        event_count=event_count,
        metrics={k: float(v) for k, v in metrics.items()},
        config=config,
        code_revision=code_revision(),
        files=file_digests(adapter_dir),
    )
