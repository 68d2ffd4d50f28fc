"""``rlhf-broker`` takes its tansu child down on every terminating signal, not only Ctrl-C.

tansu runs in its own session, so nothing but the launcher stops it: a launcher that dies on
SIGTERM or SIGHUP without stopping it leaves a broker holding the port. Real processes: the
launcher is started as a subprocess, signalled from outside, and tansu's pid is watched in /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from devtools.broker import free_port
from tests.support.procs import alive, children, command_line, wait_for

pytestmark = pytest.mark.kafka


def _start_broker(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.broker", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "broker.err").open("w"),
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.extend(stdout), daemon=True).start()
    return proc, lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_broker_launcher_stops_tansu_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    proc, lines = _start_broker(tmp_path)
    tansu: list[int] = []
    try:
        assert wait_for(lambda: any("broker ready" in line for line in lines), 60), (
            lines,
            (tmp_path / "broker.err").read_text(),
        )
        tansu += [pid for pid in children(proc.pid) if "tansu" in command_line(pid)]
        assert len(tansu) == 1, [command_line(pid) for pid in children(proc.pid)]

        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0, (tmp_path / "broker.err").read_text()
        assert wait_for(lambda: not alive(tansu[0]), 5), f"tansu {tansu[0]} outlived rlhf-broker"
        assert "stopped" in (tmp_path / "broker.err").read_text()
    finally:  # a failed run must not leave its processes behind either
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in filter(alive, tansu):
            os.kill(pid, signal.SIGKILL)
