"""The spool's disk full or read-only while Kafka is unreachable (``loop.faults.spool_disk``):
requests are still answered, and every lost event is counted and logged."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.faults.spool_disk import run_spool_disk_faults

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def test_a_failing_spool_disk_is_counted_and_requests_are_served(tmp_path: Path) -> None:
    rows = run_spool_disk_faults(tmp_path)
    if all(r.skipped for r in rows):
        pytest.skip(rows[0].skipped)
    failed = [(r.name, r.outcome) for r in rows if not r.passed]
    assert not failed, failed
