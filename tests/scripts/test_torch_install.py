"""scripts/torch_install.py: which torch build set-up installs, and that an index that does not
answer costs at most the probe's few seconds. No network: the "indexes" are local sockets."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "torch_install.py"
sys.path.insert(0, str(SCRIPT.parent))

import torch_install  # noqa: E402

NOT_INSTALLED = "0.0.1"  # a version no environment has, so nothing is skipped as installed


def _dry_run(*args: str) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--version", NOT_INSTALLED, "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, time.monotonic() - started


class _Index(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path == "/torch/"
        self.send_response(200 if found else 404)
        self.end_headers()
        self.wfile.write(b"<a href='torch-x.whl'>torch</a>" if found else b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_index() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_index() -> Iterator[str]:
    """Accepts connections (the kernel does, from the backlog) and never answers a request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_unreachable_index_falls_back_to_default_resolution_at_once() -> None:
    out, seconds = _dry_run("--gpu", "no", "--index", "http://127.0.0.1:9")
    assert "did not answer within 5 s: default resolution" in out
    command = out.strip().splitlines()[-1]
    assert command.endswith(f"pip install --disable-pip-version-check -q torch=={NOT_INSTALLED}")
    assert seconds < 4, f"took {seconds:.1f} s"  # a refused connection is no reason to wait


def test_an_index_that_never_answers_costs_only_the_probe_timeout(silent_index: str) -> None:
    started = time.monotonic()
    chosen = torch_install.plan(NOT_INSTALLED, gpu=False, index=silent_index, probe_timeout=1.0)
    seconds = time.monotonic() - started
    assert chosen.index is None and "did not answer within 1 s" in chosen.reason
    assert 0.9 < seconds < 2.5, f"took {seconds:.1f} s"


def test_no_gpu_and_an_answering_index_gives_the_cpu_build(answering_index: str) -> None:
    out, _ = _dry_run("--gpu", "no", "--index", answering_index)
    assert f"no GPU: CPU build from {answering_index}" in out
    assert out.strip().endswith(
        f"--index-url {answering_index} --timeout 30 --retries 2 torch=={NOT_INSTALLED}"
    )


def test_an_index_without_torch_is_not_used(answering_index: str) -> None:
    assert torch_install.index_reachable(answering_index, 2.0)
    assert not torch_install.index_reachable(answering_index + "/nothing-here", 2.0)


def test_a_gpu_machine_keeps_default_resolution(answering_index: str) -> None:
    out, _ = _dry_run("--gpu", "yes", "--index", answering_index)
    assert "NVIDIA GPU found: default resolution" in out and "--index-url" not in out


def test_the_pinned_version_already_installed_is_kept() -> None:
    installed = torch_install.installed_build()
    assert installed is not None  # the project's own environment has torch
    version, cuda = installed
    chosen = torch_install.plan(
        version.split("+")[0], gpu=cuda, index="http://127.0.0.1:9", probe_timeout=5.0
    )
    assert chosen.skip and version in chosen.reason
    assert torch_install.pinned_version() == "2.13.0"  # pyproject.toml's torch==2.13.0
