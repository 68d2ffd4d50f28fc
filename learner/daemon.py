"""``learner run``: ingest continuously, start a cycle when due, resume an interrupted one first.

Single-threaded on purpose: while a cycle trains, new events wait in Kafka (its retention is
the buffer), so the store never changes under a running stage and a crash leaves exactly two
durable things to reconcile: the store (events + offsets, transactional) and the cycle
checkpoint (learner.checkpoint).

SIGTERM / SIGINT / SIGHUP while a cycle trains abort the running stage at once
(``StopRequested``): a stage is already safe to lose at any instant (SIGKILL-tested), and
resuming redoes it from its start on the same snapshot, so waiting minutes for it to finish
would only delay a restart.
Outside a cycle they stop the loop after the current poll.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kafka.errors import KafkaError

from common.embedded_model import resolve_model_dir
from learner.canary import CanaryController
from learner.checkpoint import CycleCheckpoint
from learner.cycle import CycleRunner
from learner.ingest import Ingestor, KafkaSource
from learner.publish import AdapterStore
from learner.settings import LearnerSettings
from learner.store import TrainingStore
from learner.trainers import make_trainers

logger = logging.getLogger(__name__)


class StopRequested(BaseException):
    """Raised by the signal handler inside a running cycle. A BaseException so that no
    ``except Exception`` on the way (the cycle's stage-failure handler among them) mistakes a
    stop for a failed stage and rejects the cycle."""


_cycle_running = threading.Event()


@dataclass
class Services:
    settings: LearnerSettings
    store: TrainingStore
    adapters: AdapterStore
    runner: CycleRunner


def store_path(settings: LearnerSettings) -> Path:
    return Path(settings.data_dir) / "store.sqlite"


def build_services(settings: LearnerSettings, base_model_dir: Path | None = None) -> Services:
    store = TrainingStore(store_path(settings), settings.feedback_join_window_seconds)
    adapters = AdapterStore(settings.adapter_store, settings.adapter_name)
    removed = adapters.cleanup_temp()
    if removed:
        logger.info("removed %d unfinished publish dir(s) from the adapter store", removed)
    base = base_model_dir or resolve_model_dir(settings.model_dir)
    runner = CycleRunner(settings, store, adapters, make_trainers(settings), base)
    if runner.cleanup_workdirs():
        logger.info("removed work dirs of finished cycles")
    return Services(settings, store, adapters, runner)


def connect_ingestor(
    settings: LearnerSettings, store: TrainingStore, stop: threading.Event
) -> Ingestor | None:
    """Wait for the broker (retrying) and position the consumer from the store's offsets."""
    topics = [settings.topic_interactions, settings.topic_feedback]
    while not stop.is_set():
        try:
            source = KafkaSource(settings.kafka_bootstrap, topics, settings.max_poll_records)
            ingestor = Ingestor(store, source)
            ingestor.start()
            return ingestor
        except (KafkaError, TimeoutError) as exc:
            logger.warning("broker %s not ready (%s); retrying", settings.kafka_bootstrap, exc)
            stop.wait(2.0)
    return None


def run_daemon(
    settings: LearnerSettings, stop: threading.Event | None = None, max_cycles: int | None = None
) -> int:
    stop = stop or threading.Event()
    svc = build_services(settings)
    pending = svc.runner.pending()
    if pending is not None:  # finish what a killed process started, on its snapshot
        logger.info("resuming cycle %d at stage %s", pending.cycle_id, pending.stage)
        _run_cycle(svc.runner, stop, pending)
    ingestor = connect_ingestor(settings, svc.store, stop)
    canary = canary_controller(svc) if settings.canary else None
    cycles = 0
    last_gauges = last_due = 0.0
    while ingestor is not None and not stop.is_set():
        n = ingestor.step(settings.poll_timeout_ms)
        if time.monotonic() - last_gauges > 5.0:
            ingestor.update_gauges()
            last_gauges = time.monotonic()
        # Check the trigger when idle, and every few seconds under steady traffic too (a busy
        # topic must not postpone training forever).
        if n == 0 or time.monotonic() - last_due > 5.0:
            last_due = time.monotonic()
            # While a canary is undecided no cycle starts: the next version trains on from
            # what the users accept.
            waiting = canary is not None and _canary_pending(canary)
            step = next_step(cycles, max_cycles, waiting, svc.runner.due)
            if step == "exit":
                break
            if step == "cycle":
                _run_cycle(svc.runner, stop)
                cycles += 1
                if canary is None and max_cycles is not None and cycles >= max_cycles:
                    break  # no canary to wait for
                continue
        if n == 0:
            stop.wait(settings.idle_sleep_seconds)
    if ingestor is not None:
        ingestor.source.close()
    svc.store.close()
    return 0


def next_step(
    cycles: int, max_cycles: int | None, canary_waiting: bool, due: Callable[[], bool]
) -> Literal["cycle", "exit", "idle"]:
    """What the daemon does at a trigger check. After ``max_cycles`` cycles it starts no more
    and exits once no canary is undecided: the last cycle's version is decided by the users
    before the run ends, as it would be in a daemon left running."""
    if max_cycles is not None and cycles >= max_cycles:
        return "idle" if canary_waiting else "exit"
    if not canary_waiting and due():
        return "cycle"
    return "idle"


def canary_controller(svc: Services) -> CanaryController:
    publisher = svc.runner.publisher
    return CanaryController(svc.settings, svc.store, publisher.emit, publisher.record_promoted)


def _canary_pending(canary: CanaryController) -> bool:
    """Decide the running canary if the votes allow; whether one is still undecided."""
    try:
        canary.tick()
    except (KafkaError, OSError) as exc:  # the decision is re-derived next time, same event
        logger.warning("canary decision could not be sent (%s); retrying", exc)
    return canary.active() is not None


def run_until_stopped(
    settings: LearnerSettings, stop: threading.Event, max_cycles: int | None = None
) -> int:
    """``run_daemon`` that treats an aborted stage as a clean stop (exit status 0)."""
    try:
        return run_daemon(settings, stop, max_cycles)
    except StopRequested:
        logger.info("stopped during a cycle; it resumes at its last finished stage on restart")
        return 0


def _run_cycle(
    runner: CycleRunner, stop: threading.Event, ckpt: CycleCheckpoint | None = None
) -> None:
    while not stop.is_set():
        _cycle_running.set()
        try:
            runner.run(ckpt or runner.pending())
            return
        except (KafkaError, OSError) as exc:  # announce failed: the version is safe, retry
            logger.warning("cycle could not finish (%s); retrying in 5s", exc)
            ckpt = None
        finally:
            _cycle_running.clear()
        stop.wait(5.0)


def install_signal_handlers(stop: threading.Event) -> None:
    def _handler(signum: int, _frame: object) -> None:
        stop.set()
        if _cycle_running.is_set():
            logger.info("signal %d: aborting the running stage", signum)
            _cycle_running.clear()  # a second signal during unwinding must not raise again
            raise StopRequested
        logger.info("signal %d: stopping after the current poll", signum)

    # SIGHUP too (its terminal closed): a launched stage's process group
    # (learner.trainers.launched) is only taken down on the way out of a handled stop.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _handler)
