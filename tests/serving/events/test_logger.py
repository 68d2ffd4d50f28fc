"""Event logger against the real broker (Tansu): order, outages through a TCP proxy, broker and
process restarts. Unit tests at the bottom need no broker (it is unreachable on purpose)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import DevBroker, create_topics, free_port
from loop.faults.tcp_proxy import ProxiedBroker
from schemas.events import EventBase, FeedbackRating, PairServed
from serving.events.logger import EventLogger
from serving.settings import ServingSettings
from tests.events import pair_served
from tests.support.kafka_read import read_topic
from tests.support.waits import until

pytestmark = pytest.mark.anyio

# emit() itself takes ~10-50 us; its worst case is bounded by CPython's GIL switch interval
# (5 ms) while the delivery thread runs, plus scheduling noise on a shared 2-core machine. A
# blocking emit would take the 2 s delivery timeout.
_MAX_EMIT_SECONDS = 0.05


def _settings(bootstrap: str, spool: Path, prefix: str) -> ServingSettings:
    return ServingSettings(
        kafka_bootstrap=bootstrap,
        spool_dir=str(spool),
        topic_interactions=f"{prefix}.interactions",
        topic_feedback=f"{prefix}.feedback",
        topic_adapters=f"{prefix}.adapters",
        kafka_delivery_timeout_seconds=2.0,
        spool_retry_max_seconds=0.5,
    )


def _topics(settings: ServingSettings) -> list[str]:
    return [settings.topic_interactions, settings.topic_feedback]


async def _started_logger(
    bootstrap: str, spool: Path, prefix: str
) -> tuple[ServingSettings, EventLogger]:
    """A started logger on fresh ``prefix`` topics (created first) with its spool in ``spool``."""
    settings = _settings(bootstrap, spool, prefix)
    create_topics(bootstrap, _topics(settings))
    logger = EventLogger(settings)
    await logger.start()
    return settings, logger


def _event(i: int) -> EventBase:
    """Alternate two topics; the sequence number is in the key."""
    if i % 2:
        return FeedbackRating(response_id=f"r{i}", user_id="u1", rating="up")
    return pair_served().model_copy(update={"pair_id": f"p{i}"})


def _expected(events: list[EventBase], settings: ServingSettings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {t: [] for t in _topics(settings)}
    for e in events:
        topic = (
            settings.topic_interactions if isinstance(e, PairServed) else settings.topic_feedback
        )
        out[topic].append(e.event_id)
    return out


def _delivered(
    bootstrap: str, settings: ServingSettings, expected: dict[str, list[str]], timeout: float = 60.0
) -> dict[str, list[str]]:
    """Event ids per topic in log order, duplicates (at-least-once re-sends) removed."""
    out = {}
    for topic, ids in expected.items():
        values = read_topic(bootstrap, topic, expect=len(ids), timeout=timeout)
        seen: dict[str, None] = {}
        for _, value in values:
            seen.setdefault(json.loads(value)["event_id"], None)
        out[topic] = list(seen)
    return out


def _emit_timed(logger: EventLogger, events: list[EventBase]) -> list[float]:
    latencies = []
    for event in events:
        t0 = time.perf_counter()
        logger.emit(event)
        latencies.append(time.perf_counter() - t0)
    return latencies


def _assert_fast(latencies: list[float]) -> None:
    ordered = sorted(latencies)
    assert ordered[int(len(ordered) * 0.99) - 1] < 1e-3, ordered[-10:]  # p99 sub-millisecond
    assert ordered[-1] < _MAX_EMIT_SECONDS, ordered[-10:]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[ProxiedBroker]:
    with ProxiedBroker(topics=[], log_path=tmp_path / "tansu.log") as broker:
        yield broker


@pytest.mark.kafka
async def test_events_arrive_in_order_keyed_per_topic_table(
    kafka_broker: DevBroker, tmp_path: Path
) -> None:
    settings, logger = await _started_logger(
        kafka_broker.bootstrap, tmp_path / "spool", uuid.uuid4().hex[:8]
    )
    events = [_event(i) for i in range(300)]
    _emit_timed(logger, events)
    await logger.stop()

    expected = _expected(events, settings)
    assert _delivered(kafka_broker.bootstrap, settings, expected) == expected
    keys = [k for k, _ in read_topic(kafka_broker.bootstrap, settings.topic_feedback, expect=150)]
    assert keys == [e.key().encode() for e in events if isinstance(e, FeedbackRating)]
    counts = logger.counts()
    assert counts["produced"] == 300
    assert counts["spooled"] == 0
    assert counts["dropped"] == 0


@pytest.mark.kafka
async def test_proxy_cut_spools_then_replays_in_order(
    proxied: ProxiedBroker, tmp_path: Path
) -> None:
    settings, logger = await _started_logger(proxied.bootstrap, tmp_path / "spool", "cut")
    events = [_event(i) for i in range(900)]

    before = _emit_timed(logger, events[:300])
    await until(lambda: logger.counts()["produced"] == 300)
    proxied.proxy.cut()
    during = []
    for i in range(300, 600):  # traffic keeps flowing during the outage
        during += _emit_timed(logger, [events[i]])
        await asyncio.sleep(0.005)
    await until(lambda: logger.counts()["spool_depth"] > 0)
    assert logger.counts()["produced"] < 600
    await asyncio.sleep(1.0)  # more back-off probes fail while still cut
    proxied.proxy.resume()
    after = _emit_timed(logger, events[600:])
    await until(lambda: logger.counts()["produced"] == 900)
    await logger.stop()

    expected = _expected(events, settings)
    assert _delivered(proxied.bootstrap, settings, expected) == expected
    counts = logger.counts()
    assert counts["spooled"] > 0
    assert counts["produced"] == 900
    assert counts["replayed"] == counts["spooled"]
    assert counts["dropped"] == 0 and counts["spool_depth"] == 0
    # emit() never waits for Kafka: sub-millisecond even while the broker is unreachable.
    _assert_fast(before + during + after)
    _assert_fast(during)


@dataclass(frozen=True)
class _BrokerFault:
    """One way the broker goes away mid-stream, and how it comes back."""

    broker: str  # the fixture that provides it
    begin: Callable[[Any], None]
    spooled: Callable[[dict[str, int]], bool]  # the logger noticed: events went to the spool
    end: Callable[[Any, ServingSettings], None]
    delivered_from: int  # the first of the 200 events the broker still holds at the end
    emit_stays_fast: bool  # checked only where the broker is slow, not stopped


def _restart(broker: DevBroker, settings: ServingSettings) -> None:
    # Memory storage: the restarted broker is empty; the topics must be created again.
    broker.start()
    create_topics(broker.bootstrap, _topics(settings))


# A path slower than the 2 s delivery timeout: the logger spools and keeps the order.
_SLOW = _BrokerFault(
    "proxied",
    lambda b: b.proxy.slow(3.0),
    lambda counts: counts["spooled"] > 0,
    lambda b, _settings: b.proxy.resume(),
    0,
    True,
)
# A restart: what the first broker held is gone with it; everything emitted while it was down
# or after it came back is delivered, in order.
_RESTART = _BrokerFault(
    "fresh_broker", lambda b: b.stop(), lambda counts: counts["spooled"] == 100, _restart, 50, False
)


@pytest.mark.kafka
@pytest.mark.parametrize("fault", [_SLOW, _RESTART], ids=["slow_path", "broker_restart"])
async def test_events_outlive_a_broker_fault_in_order(
    fault: _BrokerFault, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker = request.getfixturevalue(fault.broker)
    settings, logger = await _started_logger(broker.bootstrap, tmp_path / "spool", fault.broker)
    events = [_event(i) for i in range(200)]
    _emit_timed(logger, events[:50])
    await until(lambda: logger.counts()["produced"] == 50)
    fault.begin(broker)
    latencies = _emit_timed(logger, events[50:150])
    await until(lambda: fault.spooled(logger.counts()))
    await asyncio.to_thread(fault.end, broker, settings)
    _emit_timed(logger, events[150:])
    await until(lambda: logger.counts()["produced"] == 200)
    await logger.stop()

    expected = _expected(events[fault.delivered_from :], settings)
    assert _delivered(broker.bootstrap, settings, expected) == expected
    if fault.emit_stays_fast:
        _assert_fast(latencies)
    assert logger.counts()["dropped"] == 0


@pytest.mark.kafka
async def test_spool_left_by_stopped_process_is_replayed_by_next(
    proxied: ProxiedBroker, tmp_path: Path
) -> None:
    settings = _settings(proxied.bootstrap, tmp_path / "spool", "proc")
    create_topics(proxied.bootstrap, _topics(settings))
    events = [_event(i) for i in range(150)]
    first = EventLogger(settings)
    await first.start()
    _emit_timed(first, events[:50])
    await until(lambda: first.counts()["produced"] == 50)
    proxied.proxy.cut()
    _emit_timed(first, events[50:120])
    await first.stop(timeout=5.0)  # broker unreachable: everything goes to the spool
    assert first.counts()["spooled"] == 70
    assert first.counts()["spool_depth"] == 70
    assert any((tmp_path / "spool").glob("seg-*.log"))

    proxied.proxy.resume()
    second = EventLogger(settings)
    await second.start()
    assert second.counts()["spool_depth"] == 70
    _emit_timed(second, events[120:])  # newer events wait behind the replayed ones
    await until(lambda: second.counts()["produced"] == 100)
    await second.stop()

    expected = _expected(events, settings)
    assert _delivered(proxied.bootstrap, settings, expected) == expected
    assert second.counts()["replayed"] == 70 + second.counts()["spooled"]
    assert not list((tmp_path / "spool").glob("seg-*.log"))


async def test_unreachable_kafka_spools_without_blocking(tmp_path: Path) -> None:
    settings = _settings(f"127.0.0.1:{free_port()}", tmp_path / "spool", "down")
    logger = EventLogger(settings)
    await logger.start()
    latencies = _emit_timed(logger, [_event(i) for i in range(100)])
    await until(lambda: logger.counts()["spooled"] == 100, timeout=30)
    await logger.stop(timeout=5.0)
    _assert_fast(latencies)
    counts = logger.counts()
    assert counts["produced"] == 0 and counts["dropped"] == 0
    assert counts["spool_depth"] == 100


async def test_emit_never_raises(tmp_path: Path) -> None:
    settings = _settings(f"127.0.0.1:{free_port()}", tmp_path / "spool", "bad")
    logger = EventLogger(settings)
    logger.emit(_event(0))  # not started yet: counted, not raised
    await logger.start()

    class Broken(FeedbackRating):
        def key(self) -> str:
            raise RuntimeError("boom")

    logger.emit(Broken(response_id="r", user_id="u", rating="up"))
    await logger.stop(timeout=2.0)
    assert logger.counts()["invalid"] == 1
    assert logger.counts()["discarded"] == 1


async def test_only_a_failing_disk_drops_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(f"127.0.0.1:{free_port()}", tmp_path / "spool", "disk")
    logger = EventLogger(settings)
    await logger.start()

    def disk_full(self: object, records: list[object]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("serving.events.spool.DiskSpool.append", disk_full)
    _emit_timed(logger, [_event(i) for i in range(10)])
    await until(lambda: logger.counts()["dropped"] == 10, timeout=30)
    await logger.stop(timeout=5.0)
    counts = logger.counts()
    assert counts["spooled"] == 0 and counts["produced"] == 0
