"""What ``learner status`` reports: store counts, offsets and lag, versions, gate outcomes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from learner.checkpoint import load_checkpoint
from learner.publish import AdapterStore
from learner.settings import LearnerSettings
from learner.store import TrainingStore
from schemas.versions import AdapterVersion

logger = logging.getLogger(__name__)


def _end_offsets(settings: LearnerSettings) -> dict[str, int] | str:
    try:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            request_timeout_ms=5000,
            bootstrap_timeout_ms=3000,  # status must answer quickly with the broker down
        )
        try:
            tps = [
                TopicPartition(t, p)
                for t in (settings.topic_interactions, settings.topic_feedback)
                for p in sorted(consumer.partitions_for_topic(t) or [])
            ]
            return {
                f"{tp.topic}[{tp.partition}]": off for tp, off in consumer.end_offsets(tps).items()
            }
        finally:
            consumer.close()
    except Exception as exc:  # status must work with the broker down
        return f"broker unreachable: {exc}"


def collect_status(settings: LearnerSettings) -> dict[str, Any]:
    data_dir = Path(settings.data_dir)
    store = TrainingStore(data_dir / "store.sqlite", settings.feedback_join_window_seconds)
    try:
        positions = {f"{t}[{p}]": pos.to_json() for (t, p), pos in store.positions().items()}
        ends = _end_offsets(settings)
        lag = (
            {k: max(0, ends[k] - positions[k]["next_offset"]) for k in positions if k in ends}
            if isinstance(ends, dict)
            else ends
        )
        adapters = AdapterStore(settings.adapter_store, settings.adapter_name)
        versions = adapters.versions()
        ckpt = load_checkpoint(data_dir)
        return {
            "store": store.table_sizes(),
            "comparisons": len(store.comparisons()),
            "new_comparisons": store.count_new_comparisons(store.last_cycle_seq()),
            "counters": store.counters(),
            "offsets": positions,
            "end_offsets": ends,
            "lag": lag,
            "published_versions": [
                str(AdapterVersion(settings.adapter_name, n)) for n in versions[-5:]
            ],
            "cycles": store.cycles(5),
            "checkpoint": ckpt.model_dump(
                mode="json", include={"cycle_id", "stage", "version", "outcome", "reason"}
            )
            if ckpt
            else None,
        }
    finally:
        store.close()


def format_status(info: dict[str, Any]) -> str:
    lines = ["store:", *(f"  {k:12s} {v}" for k, v in info["store"].items())]
    lines.append(f"  comparisons  {info['comparisons']} ({info['new_comparisons']} new)")
    lines.append("offsets (next / lag):")
    lag = info["lag"]
    for tp, pos in info["offsets"].items():
        tp_lag = lag.get(tp, "?") if isinstance(lag, dict) else "?"
        lines.append(f"  {tp:24s} {pos['next_offset']:>8} / {tp_lag} (epoch {pos['epoch']})")
    if isinstance(lag, str):
        lines.append(f"  lag: {lag}")
    for name, counts in sorted(info["counters"].items()):
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    lines.append("published: " + (", ".join(info["published_versions"]) or "none"))
    lines.append("last cycles:")
    for c in info["cycles"]:
        lines.append(f"  #{c['cycle_id']} {c['outcome'] or 'running'}: {c['reason'] or ''}")
    if info["checkpoint"]:
        ck = info["checkpoint"]
        lines.append(f"checkpoint: cycle {ck['cycle_id']} stage {ck['stage']}")
    return "\n".join(lines)
