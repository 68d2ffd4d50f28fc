"""Crash points: where the learner may SIGKILL itself, for the crash-safety tests
(``tests/learner/test_crash_e2e.py``) and the fault suite's learner rows (``loop/faults/``, which
drives them from outside; hence not named "faults" here).

``RLHF_LEARNER_FAULT_AT=<point>[,<point>...]`` makes the process SIGKILL itself the first time
it reaches a named point; ``RLHF_LEARNER_FAULT_ONCE_DIR`` (a directory) remembers which points
already fired so the restarted process runs through them. Unset in production:
``crash_point`` is then a dictionary lookup and nothing else.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

# Every stage of a cycle, in the order a cycle reaches them. The fault suite
# (loop/faults/kafka_faults.py) kills the learner at each.
STAGE_POINTS = (
    "ingest.before_commit",
    "cycle.after_snapshot",
    "cycle.after_sft",
    "cycle.after_reward",
    "cycle.after_ppo",
    "cycle.after_evaluate",
    "publish.after_files",
    "publish.after_rename",
    "publish.before_event",
    "cycle.before_done",
)

# The points the crash tests cover: all but the ends of SFT (runs only when the snapshot holds
# new corrections) and of evaluation.
POINTS = tuple(p for p in STAGE_POINTS if p not in ("cycle.after_sft", "cycle.after_evaluate"))


def crash_point(point: str) -> None:
    wanted = os.environ.get("RLHF_LEARNER_FAULT_AT", "")
    if not wanted or point not in wanted.split(","):
        return
    once_dir = os.environ.get("RLHF_LEARNER_FAULT_ONCE_DIR")
    if once_dir:
        marker = Path(once_dir) / point
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    logger.warning("fault injection: SIGKILL at %s", point)
    os.kill(os.getpid(), signal.SIGKILL)
