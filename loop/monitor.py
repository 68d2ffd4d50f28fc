"""What the demo watches, read only through public surfaces: Prometheus ``/metrics`` of serving
and learner, serving's ``/admin/adapters``, and the Kafka topics (adapter events as they are
published; event counts per kind to prove that nothing was lost).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import decode_event

logger = logging.getLogger(__name__)


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    """Prometheus text -> {'name{label="v",...}': value}; {} if the target does not answer."""
    try:
        resp = httpx.get(url, timeout=timeout)
        resp.raise_for_status()
    except httpx.HTTPError:
        return {}
    return parse_metrics(resp.text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition text -> {'name{label="v",...}': value}."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def metric_labels(metrics: dict[str, float], name: str, label: str) -> dict[str, float]:
    """{label value: sample value} for the samples of ``name``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        for part in rest.rstrip("}").split(","):
            k, _, v = part.partition("=")
            if k == label:
                out[v.strip('"')] = out.get(v.strip('"'), 0.0) + value
    return out


def admin_adapters(root: str, admin_token: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        resp = httpx.get(
            f"{root}/admin/adapters",
            timeout=timeout,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        resp.raise_for_status()
        data = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class AdapterEvent:
    kind: str
    version: str  # the version that serves after it (rolled back: the one rolled back to)
    ts: str
    canary: bool = False  # published as a canary: the users' votes decide
    # The version it takes out of service: promoted, the one serving before; rolled back, the
    # canary (or version) rolled back.
    from_version: str | None = None
    reason: str = ""
    evidence: dict[str, Any] | None = None  # a canary decision's votes and interval

    def decides(self, canary: str) -> bool:
        """Whether this is the users' decision on ``canary`` (promoted or rolled back)."""
        if self.kind == "adapter.promoted":
            return self.version == canary
        return self.kind == "adapter.rolled_back" and self.from_version == canary


def adapter_event(event: Any) -> AdapterEvent:
    """What the demo and the acceptance run keep of an adapters-topic event."""
    version = getattr(event, "version", None) or getattr(event, "to_version", "?")
    evidence = getattr(event, "evidence", None)
    return AdapterEvent(
        kind=str(getattr(event, "kind", "?")),
        version=str(version),
        ts=event.ts.isoformat(),
        canary=bool(getattr(event, "canary", False)),
        from_version=getattr(event, "from_version", None)
        or getattr(event, "previous_version", None),
        reason=str(getattr(event, "reason", "")),
        evidence=dict(evidence) if evidence else None,
    )


class AdapterWatcher:
    """Follows the adapters topic from the beginning (manual assignment, as Tansu needs)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.events: list[AdapterEvent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="adapter-watcher", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> AdapterWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def snapshot(self) -> list[AdapterEvent]:
        with self._lock:
            return list(self.events)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            consumer.assign([TopicPartition(self.topic, 0)])
            consumer.seek_to_beginning()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        result = decode_event(record.value)
                        if result.event is None:
                            continue
                        with self._lock:
                            self.events.append(adapter_event(result.event))
        except Exception:  # the demo goes on without this panel
            logger.exception("adapter watcher stopped")
        finally:
            consumer.close()


def count_events(bootstrap: str, topics: list[str], timeout: float = 30.0) -> Counter[str]:
    """Every event now in ``topics`` (all partitions), counted by kind; undecodable ones as
    ``invalid``. Reads up to the end offsets taken at the start."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    counts: Counter[str] = Counter()
    try:
        parts = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or {0})
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topics} to the end in {timeout:.0f}s")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    result = decode_event(record.value)
                    counts[
                        str(getattr(result.event, "kind", "?")) if result.event else "invalid"
                    ] += 1
    finally:
        consumer.close()
    return counts
