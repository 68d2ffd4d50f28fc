"""The spool's disk fails while Kafka is unreachable: full (ENOSPC), then read-only (EROFS).

A real ``serve`` process spools to a small tmpfs; the broker is cut at its proxy so every event
goes to the spool. Requests must still be answered; the lost events must be exactly the ones
counted by ``rlhf_serving_events_dropped_total`` and named in an error log line. Mounting a
tmpfs needs root (CAP_SYS_ADMIN); where that is refused the row says so and is not a pass.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from loop.faults.rows import FaultRow
from loop.faults.serving_faults import Replica
from loop.faults.world import World, WorldOptions
from loop.monitor import metric_sum

logger = logging.getLogger(__name__)

TMPFS_SIZE = "256k"


@contextlib.contextmanager
def small_tmpfs(path: Path) -> Iterator[bool]:
    """A tmpfs of ``TMPFS_SIZE`` at ``path``; yields False if it cannot be mounted here."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()


def _dropped(world: World) -> float:
    return metric_sum(world.serving_metrics(), "rlhf_serving_events_dropped_total")


def _serve_a_while(replica: Replica, n: int) -> list[int]:
    return [replica.chat(f"Question {i} while the disk fails.").status_code for i in range(n)]


def _case(world: World, replica: Replica, name: str, action: str, log_says: str) -> FaultRow:
    t0 = time.monotonic()
    before = _dropped(world)
    statuses = _serve_a_while(replica, 6)
    served = sum(1 for s in statuses if s == 200)
    # Each event first waits out the delivery timeout against the cut broker, then fails to
    # reach the disk: wait for all of them, then a little longer to see that no more come.
    world.wait_for("events dropped and counted", lambda: _dropped(world) >= before + served, 90)
    time.sleep(2.0)
    dropped = _dropped(world) - before
    assert world.serving is not None
    logged = log_says in world.serving.log_path.read_text(errors="replace")
    # Each answered plain request is one response.served event.
    return FaultRow(
        "spool",
        name,
        action,
        f"{served}/{len(statuses)} requests answered 200; rlhf_serving_events_dropped_total "
        f"+{dropped:.0f} (= events of those requests: {dropped == served}); error log "
        f"'{log_says}': {logged}",
        passed=served == len(statuses) and dropped == served and logged,
        seconds=time.monotonic() - t0,
    )


def run_spool_disk_faults(tmp: Path) -> list[FaultRow]:
    spool = tmp / "spool-tmpfs"
    with small_tmpfs(spool) as mounted:
        if not mounted:
            reason = "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"
            return [
                FaultRow("spool", n, "-", "-", passed=False, skipped=reason)
                for n in ("spool disk full", "spool disk read-only")
            ]
        options = WorldOptions(
            proxied=True,
            extra_serving_env={
                "SERVING_SPOOL_DIR": str(spool),
                "SERVING_ADAPTER_FOLLOW_TOPIC": "false",
                "SERVING_KAFKA_DELIVERY_TIMEOUT_SECONDS": "0.5",
            },
        )
        world = World(tmp / "world", options)
        try:
            world.broker.start()
            world.proxy.cut()  # every event goes to the spool
            world.start_serving()
            world.wait_for("serving ready", world.ready, 180)
            replica = Replica(world)
            _fill(spool)
            full = _case(
                world, replica, "spool disk full", "broker cut, spool tmpfs filled (ENOSPC)",
                "No space left on device",
            )  # fmt: skip
            (spool / "filler").unlink()
            subprocess.run(["mount", "-o", "remount,ro", str(spool)], check=True)
            read_only = _case(
                world, replica, "spool disk read-only", "broker cut, spool remounted "
                "read-only (EROFS)", "Read-only file system",
            )  # fmt: skip
            subprocess.run(["mount", "-o", "remount,rw", str(spool)], check=True)
            return [full, read_only]
        finally:
            world.close()
