"""Load with a hot swap and a rollback in the middle: 64 simulated clients against a real
``serve`` (tiny model) and a fake-trainer learner for ``seconds``; at a third of the time an
adapter is promoted, at two thirds rolled back. Serving's and the learner's RSS are sampled
every few seconds; chat latencies are recorded per request. Bench only (``--soak``)."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from pathlib import Path

import psutil

from loop.faults.adapters import write_version
from loop.faults.kafka_faults import settle_and_tally
from loop.faults.rows import FaultRow
from loop.faults.world import SERVING_MODEL_NAME, World, WorldOptions

logger = logging.getLogger(__name__)

CLIENTS = 64
RSS_EVERY_SECONDS = 5.0
# Growth allowed from the sample after warm-up to the last: caches and allocator arenas settle,
# a leak keeps growing.
RSS_GROWTH_LIMIT = 0.25


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def _sample_rss(world: World, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    while not stop.wait(RSS_EVERY_SECONDS):
        serving = world.serving.proc.pid if world.serving and world.serving.proc else None
        learner = world.learner.proc.pid if world.learner and world.learner.proc else None
        out.append((_rss_mib(serving), _rss_mib(learner)))


def _growth(samples: list[float]) -> float:
    if len(samples) < 3:
        return 0.0
    warm = samples[len(samples) // 4]
    return (samples[-1] - warm) / warm if warm else 0.0


def _percentiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "too few requests"
    q = statistics.quantiles(latencies, n=100)
    return f"p50 {q[49]:.2f}s p95 {q[94]:.2f}s p99 {q[98]:.2f}s max {max(latencies):.2f}s"


# Capacity under load is measured here, not the per-key rate limit (3,000 chats a minute by
# default, which 64 clients on one key exceed by design).
UNLIMITED = {"SERVING_KEY_CHAT_PER_MINUTE": "0", "SERVING_KEY_FEEDBACK_PER_MINUTE": "0"}
# The learner ingests throughout; no training cycle runs (a cycle pauses ingestion, and with
# fake trainers every few comparisons would start one).
NO_CYCLES = 10**9


def run_soak(tmp: Path, seconds: float) -> FaultRow:
    world = World(tmp, WorldOptions(fake_trainers=True, extra_serving_env=UNLIMITED))
    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()
    try:
        world.broker.start()
        replica = world.start_serving()
        world.start_learner(NO_CYCLES, LEARNER_CYCLE_PERIOD_SECONDS="0")  # by count only
        world.wait_for("serving ready", lambda: world.ready(replica), 180)
        write_version(world.adapters, "policy", 1, world.model_dir, model_name=SERVING_MODEL_NAME)
        sampler = threading.Thread(target=_sample_rss, args=(world, stop, rss), daemon=True)
        sampler.start()
        world.start_users(clients=CLIENTS, retries=0)
        t0 = time.monotonic()
        time.sleep(seconds / 3)
        t_swap = time.monotonic()
        swap = world.admin_post(replica, "/admin/adapters/promote", {"version": "policy@v1"})
        swap_s = time.monotonic() - t_swap  # load, smoke check and swap, under full load
        time.sleep(seconds / 3)
        t_rollback = time.monotonic()
        rollback = world.admin_post(replica, "/admin/adapters/rollback", {})
        rollback_s = time.monotonic() - t_rollback
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        latencies = list(world.ledger.latencies)
        events = settle_and_tally(world)
        stop.set()
        stats = world.all_user_stats()
        serving_rss, learner_rss = [s for s, _ in rss], [lr for _, lr in rss]
        growth = (_growth(serving_rss), _growth(learner_rss))
        ok = (
            not stats["errors"]
            and not stats["feedback_failed"]
            and swap.status_code == rollback.status_code == 200
            and max(growth) <= RSS_GROWTH_LIMIT
            and events.clean
        )
        return FaultRow(
            "load",
            f"soak: {CLIENTS} clients, {seconds / 60:.0f} min",
            f"{CLIENTS} concurrent simulated users; promote policy@v1 at 1/3, rollback at 2/3",
            f"{stats['pairs']} pairs, errors {stats['errors'] or 0}; swap {swap.status_code} "
            f"in {swap_s:.1f}s, rollback {rollback.status_code} in {rollback_s:.1f}s; "
            f"latency {_percentiles(latencies)}; RSS serving "
            f"{_span(serving_rss)} ({growth[0]:+.0%} after warm-up), learner "
            f"{_span(learner_rss)} ({growth[1]:+.0%}); limit {RSS_GROWTH_LIMIT:+.0%}",
            passed=bool(ok),
            events=events,
            seconds=time.monotonic() - started,
        )
    finally:
        stop.set()
        world.close()


def _span(samples: list[float]) -> str:
    return f"{min(samples):.0f}-{max(samples):.0f} MiB" if samples else "not sampled"
