"""The acceptance run's progress lines on stderr: the run takes about an hour and is otherwise
silent until its report (``bench/acceptance.py``)."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


@dataclasses.dataclass
class Progress:
    """What the run is doing, written by the main flow and read by the reporter thread."""

    target: int  # comparisons in all rounds
    phase: str = "starting the services"
    eval_done: int = 0
    eval_total: int = 0
    canary_votes: float | None = None  # the running canary's decisive votes so far

    def eval_progress(self, done: int, total: int) -> None:
        self.eval_done, self.eval_total = done, total


class ProgressReporter:
    """One line to ``out`` (stderr) every ``interval`` seconds, and at once when the learner's
    stage or the run's phase changes: the run takes about an hour and is otherwise silent until
    its report. Reads the comparisons accepted so far and the learner's stage through the given
    callables (the simulated users' counters and the learner's ``/metrics``)."""

    def __init__(
        self,
        progress: Progress,
        comparisons: Callable[[], int],
        learner_stage: Callable[[], str | None],
        interval: float,
        out: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress = progress
        self.comparisons = comparisons
        self.learner_stage = learner_stage
        self.interval = interval
        self.out = out
        self.clock = clock
        self.started = clock()
        self._last: tuple[float, int, str, str] | None = None  # time, count, stage, phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def poll(self) -> str | None:
        """Write a line if one is due; the line written, or None."""
        now, count = self.clock(), self.comparisons()
        stage, phase = self.learner_stage(), self.progress.phase
        # A new stage is news; its step count moving on is not (it shows at the interval).
        changes = ((stage or "").split(" step ")[0], phase)
        last = self._last
        if last is not None and now - last[0] < self.interval and changes == last[2:]:
            return None
        rate = (count - last[1]) / (now - last[0]) if last and now > last[0] else None
        line = progress_line(now - self.started, count, self.progress, rate, stage)
        print(line, file=self.out, flush=True)
        self._last = (now, count, *changes)
        return line

    def start(self) -> ProgressReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # Checked every 2 s so a stage change shows promptly; lines only as described above.
        while True:
            try:
                self.poll()
            except Exception as exc:  # progress lines must never end the run
                print(f"progress: {exc!r}", file=self.out, flush=True)
            if self._stop.wait(2.0):
                return


def progress_line(
    elapsed: float, comparisons: int, progress: Progress, rate: float | None, stage: str | None
) -> str:
    """``[0:12:04] round 1/2: collecting · comparisons 123/500 (+4.1/min) · learner idle``"""
    minutes, seconds = divmod(int(elapsed), 60)
    parts = [
        f"[{minutes // 60}:{minutes % 60:02d}:{seconds:02d}] {progress.phase}",
        f"comparisons {comparisons}/{progress.target}"
        + ("" if rate is None else f" ({rate * 60:+.1f}/min)"),
        f"learner {_learner_doing(stage)}",
    ]
    if progress.canary_votes is not None:
        parts.append(f"canary {progress.canary_votes:.0f} decisive votes")
    if progress.eval_total:
        parts.append(f"eval {progress.eval_done}/{progress.eval_total} prompts")
    return " · ".join(parts)


def _learner_doing(stage: str | None) -> str:
    if stage is None:
        return "-"  # its /metrics did not answer (starting, or stopped)
    return f"training: {stage}" if stage else "idle"
