"""The acceptance run's progress lines: what they say, and that they come at a modest pace (each
interval, or when the learner enters another stage or the run another phase), not as a flood."""

from __future__ import annotations

import io

from bench.acceptance_progress import Progress, ProgressReporter, progress_line
from tests.support.clock import FakeClock


def test_a_line_says_phase_comparisons_rate_stage_and_eval() -> None:
    progress = Progress(target=500, phase="round 1/2: users voting")
    assert progress_line(726.0, 123, progress, 4.1 / 60, "") == (
        "[0:12:06] round 1/2: users voting · comparisons 123/500 (+4.1/min) · learner idle"
    )
    progress.phase = "blind eval of policy@v1 vs base"
    progress.eval_progress(12, 58)
    assert progress_line(3 * 3600 + 5.0, 500, progress, None, "ppo step 3/16") == (
        "[3:00:05] blind eval of policy@v1 vs base · comparisons 500/500 · "
        "learner training: ppo step 3/16 · eval 12/58 prompts"
    )
    assert "learner - ·" in progress_line(1.0, 0, progress, None, None)  # metrics not answering
    progress.phase, progress.eval_total = "round 1/2: canary policy@v1, the users decide", 0
    progress.canary_votes = 37.0
    assert progress_line(60.0, 300, progress, None, "").endswith(
        "learner idle · canary 37 decisive votes"
    )


def test_lines_come_every_interval_and_at_each_change_only() -> None:
    clock, out = FakeClock(), io.StringIO()
    count, stage = [0], [""]  # what the users and the learner report, set by the test
    progress = Progress(target=100, phase="round 1/1: users voting")
    reporter = ProgressReporter(
        progress,
        lambda: count[0],
        lambda: stage[0],
        interval=60.0,
        out=out,
        clock=clock,
    )
    assert reporter.poll() is not None  # the first poll always reports
    polls = []
    for second in range(2, 60, 2):  # polled every 2 s, nothing changes: quiet
        clock.now, count[0] = 1000.0 + second, second
        polls.append(reporter.poll())
    assert polls == [None] * len(polls)

    clock.now, count[0] = 1060.0, 60
    line = reporter.poll()  # the interval passed: 60 comparisons in 60 s
    assert line is not None and "comparisons 60/100 (+60.0/min)" in line

    clock.now, stage[0] = 1062.0, "reward step 1/40"
    line = reporter.poll()  # the learner started a stage: reported at once
    assert line is not None and "learner training: reward step 1/40" in line
    clock.now, stage[0] = 1064.0, "reward step 2/40"
    assert reporter.poll() is None  # a step further in the same stage waits for the interval

    clock.now, progress.phase = 1066.0, "blind eval of policy@v1 vs base"
    assert "blind eval" in (reporter.poll() or "")
    assert len(out.getvalue().splitlines()) == 4
    assert out.getvalue().splitlines()[0].startswith("[0:00:00] round 1/1: users voting")
