"""Figures for the event logger: emit() latency with the broker up and cut, delivery and replay
throughput. Real Tansu broker behind the test TCP proxy.

Run: ``.venv/bin/python -m tests.serving.events.bench_emit [--events N]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devtools.broker import create_topics
from loop.faults.tcp_proxy import ProxiedBroker
from schemas.events import FeedbackRating
from serving.events.logger import EventLogger
from serving.settings import ServingSettings
from tests.support.waits import until


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p = [ordered[int(len(ordered) * q) - 1] * 1e6 for q in (0.5, 0.99)]
    return f"p50 {p[0]:.1f} us, p99 {p[1]:.1f} us, max {ordered[-1] * 1e6:.0f} us"


async def _emit_all(logger: EventLogger, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        event = FeedbackRating(response_id=f"r{i}", user_id="u", rating="up")
        t0 = time.perf_counter()
        logger.emit(event)
        latencies.append(time.perf_counter() - t0)
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the loop breathe, like a server would
    return latencies


async def _drained(predicate: Callable[[], bool]) -> float:
    # Long timeout (a slow broker), fine polling: the wait is what this benchmark reports.
    return await until(predicate, timeout=300.0, poll=0.01)


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, ProxiedBroker(topics=[]) as broker:
        settings = ServingSettings(
            kafka_bootstrap=broker.bootstrap,
            spool_dir=str(Path(tmp) / "spool"),
            kafka_delivery_timeout_seconds=2.0,
            spool_retry_max_seconds=0.5,
        )
        create_topics(broker.bootstrap, [settings.topic_feedback])
        logger = EventLogger(settings)
        await logger.start()

        t0 = time.monotonic()
        up = await _emit_all(logger, n)
        await _drained(lambda: logger.counts()["produced"] == n)
        took = time.monotonic() - t0
        print(
            f"broker up: emit {_summary(up)}; {n} emitted+delivered in {took:.2f} s "
            f"({n / took:.0f} events/s)"
        )

        broker.proxy.cut()
        down = await _emit_all(logger, n)
        await _drained(lambda: logger.counts()["spooled"] == n)
        print(f"broker cut: emit {_summary(down)}; spooled {logger.counts()['spooled']}")

        broker.proxy.resume()
        took = await _drained(lambda: logger.counts()["produced"] == 2 * n)
        print(f"resumed: spool of {n} replayed in {took:.2f} s ({n / took:.0f} events/s)")
        await logger.stop()
        print("counts:", logger.counts())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    asyncio.run(main(parser.parse_args().events))
