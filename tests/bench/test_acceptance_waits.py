"""What the acceptance run waits for: the learner's cycles read from its checkpoint, which
outlives the process (``--max-cycles`` ends it right after its last cycle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.acceptance_waits import after_cycle, learner_cycle, poll


class _Learner:
    def __init__(self, running: bool) -> None:
        self.running = running

    def log_tail(self) -> str:
        return "learner log"


class _Demo:
    """The part of a Demo the waits read: its data directory and the learner process."""

    def __init__(self, data_dir: Path, running: bool = True) -> None:
        self.data_dir = data_dir
        self.learner = _Learner(running)

    def checkpoint(self, cycle_id: int, stage: str, outcome: str | None = None) -> None:
        path = self.data_dir / "learner" / "checkpoint.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cycle_id": cycle_id, "stage": stage, "outcome": outcome}))


def test_cycles_are_read_from_the_checkpoint(tmp_path: Path) -> None:
    demo: Any = _Demo(tmp_path)
    assert learner_cycle(demo) == (0, None)  # no cycle yet
    demo.checkpoint(1, "reward")
    assert learner_cycle(demo) == (1, None)
    assert after_cycle(demo, 0, finished=False) == 1  # started
    assert after_cycle(demo, 0, finished=True) is None  # not finished yet
    demo.checkpoint(1, "done", "published")
    assert after_cycle(demo, 0, finished=True) == "published"
    assert after_cycle(demo, 1, finished=False) is None  # none after cycle 1


def test_a_learner_that_exited_after_its_last_cycle_is_not_an_error(tmp_path: Path) -> None:
    demo: Any = _Demo(tmp_path, running=False)
    demo.checkpoint(2, "done", "rejected")
    assert after_cycle(demo, 1, finished=True) == "rejected"
    with pytest.raises(RuntimeError, match="learner exited"):
        after_cycle(demo, 2, finished=False)  # no cycle will start


def test_poll_returns_what_it_found_or_times_out() -> None:
    values = iter([None, None, 3])
    assert poll(lambda: next(values), 5.0, "a value", interval=0.0) == 3
    with pytest.raises(TimeoutError, match="a value"):
        poll(lambda: None, 0.0, "a value", interval=0.0)
