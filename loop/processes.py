"""Child services as real processes: started through their command-line entry points
(``serve``, ``learner run``), configured only by their ``SERVING_*`` / ``LEARNER_*`` settings,
stopped with SIGTERM (which they handle by draining) and, only past a timeout, SIGKILL of the
child's whole process group.

Each child gets its own session (``start_new_session``) so a Ctrl-C in the terminal reaches
only the demo, which then stops the children in the order that loses no event. The other side
of that choice: nothing stops them but their launcher, so a launcher must stop them on any
terminating signal (``common.signals.StopSignals``), not only on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def entry_point(script: str, module: str) -> list[str]:
    """The console script next to this interpreter (the project's venv), else on PATH, else the
    module's ``main()`` run by this interpreter (same code, before ``pip install -e`` ran)."""
    beside = Path(sys.executable).parent / script
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(script)
    if found:
        return [found]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )
        logger.info(
            "%s started (pid %d): %s; log %s",
            self.name,
            self.proc.pid,
            " ".join(self.argv),
            self.log_path,
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout`` s for the drain, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.error("%s did not stop within %.0f s: killing it", self.name, timeout)
                self._kill_group()
                self.proc.wait()
        logger.info("%s exited with %s", self.name, self.proc.returncode)
        return self.proc.returncode

    def _kill_group(self) -> None:
        """SIGKILL the child and whatever it started in its session (it leads its own process
        group, see ``start_new_session``); called while it is alive, so the group is ours."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
