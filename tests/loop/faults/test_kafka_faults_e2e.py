"""The event path's faults in real processes (``loop.faults.kafka_faults``): broker cut, slow
and restarted, a serving replica restarted during an outage, the learner SIGKILLed at every
stage, two replicas swapping adapters. Each row: nothing lost, nothing duplicated, no user
request failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner import crash_points
from loop.faults.kafka_faults import run_event_path_faults

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def test_event_path_faults_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    rows = run_event_path_faults(tmp_path)
    names = [r.name for r in rows]
    for point in crash_points.STAGE_POINTS:
        assert f"learner SIGKILL at {point}" in names
    failed = [r for r in rows if not r.passed]
    assert not failed, failed
    for row in rows:
        if row.events is not None:
            assert row.events.lost == 0 and row.events.duplicated == 0, row
            assert row.events.stored == row.events.in_kafka > 0, row
