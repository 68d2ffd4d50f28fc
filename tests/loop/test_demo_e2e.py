"""The whole loop in real processes on the tiny model: broker, ``serve``, ``learner run`` and
simulated users, via the demo's own command line. Asserts the contract end to end: pairs are
served, feedback accepted, the learner publishes a version (as a canary, the default), serving
swaps it in beside the base while users keep calling (no failed request), later answers carry
the new version id, and the no-loss shutdown finds every event in Kafka."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
def test_demo_tiny_closes_the_loop(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "loop.demo_cli",
        "--tiny",
        "--plain",
        "--data-dir",
        str(data_dir),
        "--until-swapped",
        "1",
        "--duration",
        "600",
        "--cycle-comparisons",
        "16",
        "--concurrency",
        "2",
        "--rate",
        "2",
        "--max-tokens",
        "16",
        "--eval-prompts",
        "4",
        "--noise",
        "0.5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    summary_path = data_dir / "summary.json"
    assert summary_path.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    logs = {
        name: (data_dir / f"{name}.log").read_text(errors="replace")[-3000:]
        for name in ("serving", "learner", "demo")
    }
    assert summary["reason"].startswith("answers served by policy@v"), (summary, logs)
    assert proc.returncode == 0, (summary, logs)
    sim = summary["sim"]
    assert sim["pairs"] > 0 and sim["feedback_ok"]["preference"] > 0
    # The swap happened under live traffic and no request failed.
    assert sim["errors"] == {} and sim["feedback_failed"] == {}
    published = [
        e["version"] for e in summary["adapter_events"] if e["kind"] == "adapter.published"
    ]
    assert published and published[0].startswith("policy@v")
    # The canary is on by default: a new version first serves beside the base, as a canary.
    assert all(e["canary"] for e in summary["adapter_events"] if e["kind"] == "adapter.published")
    assert any(v in sim["answers_by_version"] for v in published)
    assert summary["events_missing"] == {}
    assert summary["events_in_kafka"]["pair.served"] == sim["pairs"]
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit.
    assert summary["serving_exit"] in (0, -signal.SIGTERM), logs["serving"]
    assert "Application shutdown complete" in (data_dir / "serving.log").read_text()
    assert summary["learner_exit"] == 0, logs["learner"]
