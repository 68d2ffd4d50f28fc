"""The acceptance run with the canary on, in real processes on the tiny model: two rounds, each
cycle's version published as a canary, the users voting on until the learner decides, the next
round's cycle after that decision, the blind evaluation of the version serving in the end, and
the report with the users' decision beside it. A tiny random model cannot win: the test checks
the flow, not the verdict (a margin of 0.49 lets the users promote a version that is not worse
than about 1 in 100, so the promoted path and the blind evaluation run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
def test_tiny_acceptance_with_the_canary_decides_each_round(tmp_path: Path) -> None:
    data_dir, report = tmp_path / "run", tmp_path / "acceptance.md"
    cmd = [
        *(sys.executable, "-m", "bench.acceptance", "--tiny"),
        *("--comparisons", "32", "--rounds", "2", "--concurrency", "2"),
        *("--max-tokens", "16", "--eval-samples", "1", "--progress-every", "600"),
        *("--canary-max-votes", "20", "--canary-share", "1.0"),
        *("--learner-env", "LEARNER_CANARY_MARGIN=0.49"),
        # A random tiny model's held-out reward gain is as often below 0 as above: with the
        # evaluation gate open every round publishes, and the canary is what this checks.
        *("--learner-env", "LEARNER_MIN_REWARD_GAIN=-1000000"),
        *("--data-dir", str(data_dir), "--out", str(report)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    logs = proc.stderr[-3000:] + (data_dir / "learner.log").read_text(errors="replace")[-3000:]
    assert report.is_file(), logs
    text = report.read_text()
    assert proc.returncode in (0, 1), logs  # 1: the verdict failed, as it does on a tiny model
    decisions = json.loads((data_dir / "canary.json").read_text())["decisions"]
    # Each round's canary was decided before the next round's cycle trained on from it.
    assert [(d["round"], d["version"]) for d in decisions] == [(1, "policy@v1"), (2, "policy@v2")]
    assert decisions[1]["baseline"] == (
        "policy@v1" if decisions[0]["outcome"] == "promoted" else "base"
    )
    assert all(d["evidence"]["wins"] + d["evidence"]["losses"] >= 20 for d in decisions)
    assert "| 2 | policy@v2 |" in text and "Canary and blind evaluation agree: " in text
    summary = json.loads((data_dir / "summary.json").read_text())
    assert summary["events_missing"] == {} and summary["sim"]["errors"] == {}
    assert summary["learner_exit"] == 0  # --max-cycles 2: it exited once the users decided
