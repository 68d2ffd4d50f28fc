"""The fault suite and its report: every fault and abusive input of ``loop.faults`` against the
real broker and real processes on the tiny random model, one row each, written to
``bench/results/reliability.md``.

    .venv/bin/python -m bench.reliability            # about 4 minutes on 2 cores
    .venv/bin/python -m bench.reliability --soak     # plus 64 clients for --soak-minutes (5)
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import RESULTS
from loop.faults.conformance import run_schemathesis
from loop.faults.kafka_faults import run_event_path_faults
from loop.faults.rows import FaultRow, markdown_table
from loop.faults.serving_faults import run_serving_faults
from loop.faults.soak import run_soak
from loop.faults.spool_disk import run_spool_disk_faults
from loop.faults.training_text import training_text_rows
from loop.faults.world import World, WorldOptions

logger = logging.getLogger("reliability")

OUT = RESULTS / "reliability.md"
MIN_CASES = 1000


def schemathesis_row(tmp: Path) -> FaultRow:
    """Generated requests against a real serving process (fake engine: the HTTP contract is
    under test, not the model), API and admin operations."""
    t0 = time.monotonic()
    world = World(
        tmp,
        WorldOptions(
            extra_serving_env={"SERVING_ENGINE": "fake", "SERVING_KAFKA_ENABLED": "false"}
        ),
    )
    try:
        world.start_serving()
        world.wait_for("serving ready", world.ready, 120)
        api = run_schemathesis(world.root, world.api_key, "^/(v1|healthz|readyz|metrics)", 150, tmp)
        admin = run_schemathesis(world.root, world.admin_token, "^/admin", 60, tmp)
    finally:
        world.close()
    generated, passed = api[0] + admin[0], api[1] + admin[1]
    return FaultRow(
        "api",
        "schemathesis (OpenAPI conformance)",
        "generated valid and invalid requests for every operation, all checks",
        f"{generated} cases, {passed} passed, {generated - passed} failed "
        "(no 5xx, no schema mismatch when equal)",
        passed=generated >= MIN_CASES and generated == passed,
        seconds=time.monotonic() - t0,
    )


def machine() -> list[str]:
    import torch

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- CPUs: {os.cpu_count()}, RAM: {ram:.0f} GiB, {platform.machine()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}",
    ]


def write_report(rows: list[FaultRow], command: str, seconds: float, soak: bool) -> None:
    passed = sum(r.verdict == "PASS" for r in rows)
    lines = [
        "# Reliability: the fault suite",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"took {seconds / 60:.1f} min",
        *machine(),
        f"- rows: {len(rows)}, PASS {passed}, FAIL {sum(r.verdict == 'FAIL' for r in rows)}, "
        f"SKIPPED {sum(r.verdict == 'SKIPPED' for r in rows)}"
        + ("" if soak else "; the soak (64 clients) did not run: `--soak`"),
        "",
        "Real Tansu broker and real `serve` / `learner run` processes on the tiny random model "
        "(learner with fake trainers). Event counts are cumulative from the start of the "
        "world the row ran in: *served* = answers and accepted votes the users got, *stored* = "
        "those events in the learner's store; *lost* and *duplicated* must be 0 "
        "(docs/faults.md).",
        "",
        markdown_table(rows),
        "",
    ]
    OUT.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", action="store_true", help="also run the 64-client load test")
    parser.add_argument("--soak-minutes", type=float, default=5.0)
    parser.add_argument(
        "--only",
        choices=["event-path", "spool-disk", "serving", "training-text", "schemathesis", "soak"],
        help="run one part (the report then holds only its rows)",
    )
    args = parser.parse_args(argv)
    from common.logs import configure_logging

    configure_logging()
    for chatty in ("httpx", "httpx2", "kafka"):  # one line per request / reconnect otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.monotonic()
    rows: list[FaultRow] = []
    parts: list[tuple[str, Callable[[Path], list[FaultRow]]]] = [
        ("event-path", run_event_path_faults),
        ("spool-disk", run_spool_disk_faults),
        ("serving", run_serving_faults),
        ("training-text", training_text_rows),
        ("schemathesis", lambda tmp: [schemathesis_row(tmp)]),
    ]
    if args.soak or args.only == "soak":
        parts.append(("soak", lambda tmp: [run_soak(tmp, args.soak_minutes * 60)]))
    if args.only:
        parts = [p for p in parts if p[0] == args.only]
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        for name, run in parts:
            logger.info("== %s", name)
            (Path(tmp) / name).mkdir()
            rows += run(Path(tmp) / name)
    command = (
        "python -m bench.reliability"
        + (f" --soak --soak-minutes {args.soak_minutes:g}" if args.soak else "")
        + (f" --only {args.only}" if args.only else "")
    )
    write_report(rows, command, time.monotonic() - started, args.soak)
    print(markdown_table(rows))
    return 0 if all(r.verdict != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    # SIGTERM and SIGHUP, like Ctrl-C, unwind through the scenarios' finally blocks that stop
    # the broker, serving and learner processes they started.
    from common.signals import StopSignals

    with StopSignals("the fault suite"):
        sys.exit(main())
