"""Faults of the event path in real processes, one :class:`FaultRow` each: the broker cut by a
TCP proxy and restored, slowed down, restarted; a serving replica restarted during an outage;
two replicas swapping adapters on one broker; the learner SIGKILLed at every stage.

All run in one :class:`World` (proxied broker on disk, fake-trainer learner), one after the
other, users calling throughout each phase. After each phase the users stop and the events are
counted (cumulatively, from the start of the world): what users were served and said, what
Kafka holds, what the learner stored (``loop.faults.rows.tally``).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from learner import crash_points
from learner.publish import AdapterStore
from loop.faults.adapters import write_version
from loop.faults.ledger import read_all
from loop.faults.rows import EventTally, FaultRow, tally
from loop.faults.world import SERVING_MODEL_NAME, Replica, World, WorldOptions
from loop.monitor import metric_sum
from schemas.topics import DEFAULT_TOPICS

logger = logging.getLogger(__name__)

MIN_NEW_COMPARISONS = 4
OUTAGE_SECONDS = 6.0


def _spool_empty(world: World, replica: Replica) -> bool:
    metrics = world.serving_metrics(replica)
    return (
        metrics.get("rlhf_serving_events_spool_depth", -1) == 0
        and metrics.get("rlhf_serving_events_queue_depth", -1) == 0
    )


def _wait_spool_empty(world: World, replica: Replica) -> None:
    def drained() -> bool:
        return _spool_empty(world, replica)

    world.wait_for(f"{replica.name} spool drained", drained, 90)


def _running_replicas(world: World) -> list[Replica]:
    return [r for r in world.replicas if r.process is not None and r.process.running]


def settle_and_tally(world: World) -> EventTally:
    """Stop the users, wait until every event reached Kafka and the learner, and count."""
    world.stop_users()
    for replica in _running_replicas(world):
        _wait_spool_empty(world, replica)
    pairs, feedback = world.ledger.snapshot()
    expected = len(pairs) + len(feedback)
    # A big backlog (the soak's tens of thousands of events) takes the learner and the reader
    # a while on a busy machine; a loss still shows, as a shortfall once the budget is spent.
    budget = max(60.0, expected / 50.0)
    _wait_quietly(lambda: world.store_events() >= expected, budget)
    topics = [DEFAULT_TOPICS.interactions, DEFAULT_TOPICS.feedback]
    records = read_all(world.broker.bootstrap, topics, at_least=expected, timeout=budget)
    ids = {r.event.event_id for r in records if r.event is not None}
    world.wait_for(
        "the learner to store every event",
        lambda: ids <= set(world.stored_event_ids()),
        timeout=120,
    )
    counted = tally(world.ledger, records, world.stored_event_ids())
    if counted.examples:
        logger.warning("event tally: %s", "; ".join(counted.examples))
    return counted


def _wait_quietly(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.5)


def _users_ok(world: World, since: int = 0) -> tuple[bool, str]:
    stats = world.all_user_stats(since)
    ok = not stats["errors"] and not stats["feedback_failed"]
    return ok, f"{stats['pairs']} pairs answered, errors {stats['errors'] or 0}"


def _phase(world: World, group: str, name: str, action: str, fault: Callable[[], str]) -> FaultRow:
    """Users call while ``fault`` runs (it returns what it observed); then count."""
    started = time.monotonic()
    mark = len(world.user_stats)
    world.start_users()
    outcome = fault()
    events = settle_and_tally(world)
    users_ok, users = _users_ok(world, mark)
    return FaultRow(
        group,
        name,
        action,
        f"{outcome}; {users}; resent copies absorbed by event_id: {events.resent}",
        passed=users_ok and events.clean,
        events=events,
        seconds=time.monotonic() - started,
    )


def _spooled(world: World) -> float:
    return metric_sum(world.serving_metrics(), "rlhf_serving_events_spooled_total")


def _wait_served(world: World, more: int, timeout: float = 60) -> None:
    start = len(world.ledger.snapshot()[0])
    world.wait_for(
        f"{more} more pairs served",
        lambda: len(world.ledger.snapshot()[0]) >= start + more,
        timeout,
    )


def _spooled_while_impaired(
    world: World, impair: Callable[[], None], served_meanwhile: int = 0
) -> float:
    """Impair the proxy until serving spools events, restore it and wait for the replay; the
    events spooled meanwhile."""
    _wait_served(world, 2)
    before = _spooled(world)
    impair()
    world.wait_for("events spooled", lambda: _spooled(world) > before, 60)
    if served_meanwhile:
        _wait_served(world, served_meanwhile)
    world.proxy.resume()
    world.wait_for("spool replayed", lambda: _spool_empty(world, world.replicas[0]), 90)
    return _spooled(world) - before


def proxy_cut(world: World) -> FaultRow:
    def fault() -> str:
        spooled = _spooled_while_impaired(world, world.proxy.cut, served_meanwhile=3)
        return f"{spooled:.0f} events spooled during the cut and replayed"

    return _phase(
        world,
        "kafka",
        "broker cut (TCP proxy)",
        "proxy drops every connection to the broker while users call; then restored",
        fault,
    )


def proxy_slow(world: World) -> FaultRow:
    def fault() -> str:
        # 3 s: slower than serving's 2 s delivery timeout
        spooled = _spooled_while_impaired(world, lambda: world.proxy.slow(3.0))
        return f"{spooled:.0f} events spooled while slow, then replayed"

    return _phase(
        world,
        "kafka",
        "broker slow",
        "every chunk through the proxy delayed 3 s (delivery timeout 2 s); then normal",
        fault,
    )


def broker_restart(world: World) -> FaultRow:
    def fault() -> str:
        _wait_served(world, 2)
        before = _spooled(world)
        world.broker.restart_behind_proxy(down_seconds=OUTAGE_SECONDS)  # type: ignore[attr-defined]
        world.wait_for("spool replayed", lambda: _spool_empty(world, world.replicas[0]), 90)
        resets = world.query("SELECT MAX(epoch) FROM offsets")
        epoch = int(resets[0][0] or 0) if resets else -1
        return (
            f"{_spooled(world) - before:.0f} events spooled while down; learner offset "
            f"epoch {epoch} (0 = no reset)"
        )

    return _phase(
        world,
        "kafka",
        "broker restarted",
        f"broker process stopped for {OUTAGE_SECONDS:.0f} s and started on its data",
        fault,
    )


def replica_restart_during_outage(world: World) -> FaultRow:
    replica = world.replicas[0]

    def fault() -> str:
        _wait_served(world, 2)
        world.proxy.cut()
        world.wait_for("events spooled", lambda: _spooled(world) > 0, 60)
        world.stop_users()  # the replica goes away: its users wait (a balancer would re-route)
        assert replica.process is not None
        code = replica.process.stop(timeout=60)
        world.start_serving(replica)
        world.wait_for("restarted replica ready (degraded)", lambda: world.ready(replica), 120)
        depth = world.serving_metrics(replica).get("rlhf_serving_events_spool_depth", 0)
        world.start_users()
        _wait_served(world, 3)
        world.proxy.resume()
        world.wait_for("spool replayed", lambda: _spool_empty(world, replica), 90)
        return (
            f"SIGTERM exit {code}; the new process found {depth:.0f} spooled events, "
            "served during the outage, replayed them when the broker returned"
        )

    return _phase(
        world,
        "kafka",
        "serving restarted during an outage",
        "broker cut; the serving process stopped and started again while cut; then restored",
        fault,
    )


def two_replicas_swapping(world: World) -> FaultRow:
    """A second replica on the same broker; a promotion on one and a rollback on the other are
    followed by both, while users call both; then the first replica leaves (rolling swap)."""
    first = world.replicas[0]
    second = world.start_serving(world.add_replica())
    world.wait_for("second replica ready", lambda: world.ready(second), 120)
    v1 = write_version(world.adapters, "policy", 1, world.model_dir, model_name=SERVING_MODEL_NAME)
    write_version(world.adapters, "policy", 2, world.model_dir, model_name=SERVING_MODEL_NAME)

    def both_on(version: str) -> bool:
        return all(world.serving_version(r) == version for r in (first, second))

    def fault() -> str:
        world.start_users(second)
        steps = []
        for replica, path, body, want in (
            (first, "/admin/adapters/promote", {"version": v1.version}, "policy@v1"),
            (second, "/admin/adapters/promote", {"version": "policy@v2"}, "policy@v2"),
            (first, "/admin/adapters/rollback", {}, "policy@v1"),
        ):
            t0 = time.monotonic()
            resp = world.admin_post(replica, path, body)
            world.wait_for(f"both replicas on {want}", partial(both_on, want), 60)
            steps.append(
                f"{path.rsplit('/', 1)[1]} on {replica.name} -> {resp.status_code}, "
                f"both on {want} in {time.monotonic() - t0:.1f}s"
            )
        since = time.monotonic()
        _wait_served(world, 2)
        versions = sorted(world.ledger.versions_since(since))
        assert first.process is not None
        world.stop_users(first)
        code = first.process.stop(timeout=60)
        steps.append(f"answers after: {versions}; {first.name} stopped (exit {code})")
        return "; ".join(steps)

    return _phase(
        world,
        "kafka",
        "two replicas swapping on one broker",
        "second replica joins; promote v1 on one, v2 on the other, rollback on the first; "
        "then the first leaves",
        fault,
    )


def learner_sigkill_every_stage(world: World, timeout: float = 240) -> list[FaultRow]:
    """Restart the learner with every stage's fault point armed; each time it kills itself,
    start it again, until every point fired. A row per point, and one with the counts."""
    assert world.learner is not None
    world.learner.stop(timeout=60)
    once = world.tmp / "faults-fired"
    env = {
        "RLHF_LEARNER_FAULT_AT": ",".join(crash_points.STAGE_POINTS),
        "RLHF_LEARNER_FAULT_ONCE_DIR": str(once),
    }
    started = time.monotonic()
    mark = len(world.user_stats)
    world.start_users()
    fired: list[tuple[str, int]] = []  # (point, learner start that died there)
    learner = world.start_learner(MIN_NEW_COMPARISONS, **env)
    deadline = started + timeout
    while len(fired) < len(crash_points.STAGE_POINTS) and time.monotonic() < deadline:
        if learner.running:
            time.sleep(0.2)
            continue
        if learner.returncode != -signal.SIGKILL:
            break
        new = [p for p in crash_points.STAGE_POINTS if (once / p).exists()]
        fired += [(p, world.learner_starts) for p in new if p not in dict(fired)]
        learner = world.start_learner(MIN_NEW_COMPARISONS, **env)
    # Every armed point fired; this learner runs clean: let it finish a cycle.
    published_before = _published_cycles(world)
    world.wait_for(
        "a cycle published after the kills",
        lambda: _published_cycles(world) > published_before,
        120,
    )
    events = settle_and_tally(world)
    store = AdapterStore(str(world.learner_adapters), "policy")
    versions = store.versions()
    complete = all(store.verify(n) == [] for n in versions)
    leftovers = [
        p.name
        for p in (world.learner_adapters or world.adapters).joinpath("policy").iterdir()
        if p.name.startswith(".tmp-")
    ]
    users_ok, users = _users_ok(world, mark)
    rows = [
        FaultRow(
            "learner",
            f"learner SIGKILL at {point}",
            f"SIGKILL inside {point.split('.', 1)[1].replace('_', ' ')} ({point}); restarted",
            _resumed(world, start + 1),
            passed=True,
        )
        for point, start in sorted(fired, key=lambda f: crash_points.STAGE_POINTS.index(f[0]))
    ]
    missing = [p for p in crash_points.STAGE_POINTS if p not in dict(fired)]
    rows += [
        FaultRow("learner", f"learner SIGKILL at {p}", "armed", "never reached", passed=False)
        for p in missing
    ]
    rows.append(
        FaultRow(
            "learner",
            "learner SIGKILLed in every stage",
            f"{len(fired)} SIGKILLs, one per stage, users calling throughout",
            f"{len(versions)} versions published, all complete: {complete}; temporary "
            f"directories left: {len(leftovers)}; {users}",
            passed=not missing and complete and not leftovers and users_ok and events.clean,
            events=events,
            seconds=time.monotonic() - started,
        )
    )
    return rows


def _published_cycles(world: World) -> int:
    rows = world.query("SELECT COUNT(*) FROM cycles WHERE outcome='published'")
    return int(rows[0][0]) if rows else 0


def _resumed(world: World, start: int) -> str:
    """What the learner started after a kill said about the cycle it found."""
    log = world.tmp / f"learner-{start}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        if "resuming cycle" in line:
            return "resumed" + line.split("resuming", 1)[1]
    return "restart found no unfinished cycle (ingestion resumed from its committed offsets)"


def run_event_path_faults(tmp: Path) -> list[FaultRow]:
    """Every event-path scenario in one world, in order; the rows in that order."""
    world = World(tmp, WorldOptions(proxied=True, fake_trainers=True))
    try:
        world.broker.start()
        replica = world.start_serving()
        world.start_learner(MIN_NEW_COMPARISONS)
        world.wait_for("serving ready", lambda: world.ready(replica), 180)
        rows = [
            proxy_cut(world),
            proxy_slow(world),
            broker_restart(world),
            replica_restart_during_outage(world),
        ]
        rows += learner_sigkill_every_stage(world)
        rows.append(two_replicas_swapping(world))
        return rows
    finally:
        world.close()
