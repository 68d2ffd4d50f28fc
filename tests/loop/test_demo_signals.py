"""``rlhf-demo`` stops the broker, serving and learner it started on SIGTERM and SIGHUP, as on
Ctrl-C, and still checks that no event was lost.

Real processes, no model: serving runs its fake engine and the learner its fake trainers (this is
about process lifetimes, not learning), on a model directory that only has to exist. The demo is
started as a subprocess, signalled from outside, and its children's pids are watched in /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import alive, children, command_line, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def _start_demo(tmp_path: Path) -> subprocess.Popen[bytes]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cmd = [
        sys.executable,
        "-m",
        "loop.demo_cli",
        "--plain",
        "--model-dir",
        str(model),
        "--data-dir",
        str(tmp_path / "demo"),
        "--serving-env",
        "SERVING_ENGINE=fake",
        "--learner-env",
        "LEARNER_TRAINERS=fake",
        "--eval-prompts",
        "0",
        "--rate",
        "5",
    ]
    out = (tmp_path / "demo.out").open("wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _kind(cmdline: str) -> str | None:
    """Which of the demo's services a command line runs (console script or ``-c`` fallback)."""
    args = cmdline.split()
    if args and args[0].endswith("/tansu"):
        return "broker"
    for name, module in (("serve", "serving.cli"), ("learner", "learner.cli")):
        if module in cmdline or any(arg.endswith("/" + name) for arg in args):
            return name
    return None


def _services(pid: int) -> dict[str, int]:
    found = {}
    for child in children(pid):
        kind = _kind(command_line(child))
        if kind is not None:
            found[kind] = child
    return found


def _output(tmp_path: Path) -> str:
    return (tmp_path / "demo.out").read_text(errors="replace")[-3000:]


@pytest.mark.parametrize(
    ("signum", "when"),
    [(signal.SIGTERM, "users voting"), (signal.SIGHUP, "starting")],
)
def test_demo_stops_its_children_on_signal(
    tmp_path: Path, signum: signal.Signals, when: str
) -> None:
    demo = _start_demo(tmp_path)
    kids: dict[str, int] = {}

    def all_started() -> bool:
        kids.update(_services(demo.pid))
        return len(kids) == 3

    try:
        assert wait_for(all_started, 120), (kids, _output(tmp_path))
        if when == "users voting":
            assert wait_for(lambda: "preference=" in _output(tmp_path), 120), _output(tmp_path)

        demo.send_signal(signum)
        demo.wait(timeout=120)
        left = {name: pid for name, pid in kids.items() if alive(pid)}
        assert wait_for(lambda: not any(map(alive, kids.values())), 5), f"left running: {left}"
        summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
        assert summary["reason"] == signum.name
        assert summary["events_missing"] == {}, summary
    finally:  # a failed run must not leave its processes behind either
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for pid in filter(alive, kids.values()):
            os.kill(pid, signal.SIGKILL)
