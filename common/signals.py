"""Terminating signals as an exception, so that launchers stop their children on any of them.

Our launchers (``rlhf-broker``, ``rlhf-demo``, ``bench/acceptance.py``) start children in their
own sessions (``start_new_session``): a Ctrl-C in the terminal reaches only the launcher, which
then stops its children in an order that loses nothing. That cleanup runs from ``except
KeyboardInterrupt`` / ``finally``, which SIGTERM (``kill``, systemd, a container runtime) and
SIGHUP (the terminal closed) would skip: by default they end the launcher at once and leave its
children running.

``StopSignals`` makes SIGTERM and SIGHUP raise :class:`Terminated` (a ``KeyboardInterrupt``) in
the main thread, so every path that already handles Ctrl-C handles them too. Only the first
signal raises: a second Ctrl-C or ``kill`` while the launcher is stopping its children is
logged and ignored, so the cleanup is never abandoned half way (``stopping()`` says that a
cleanup started without any signal).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

# The signals that end a process by default and can be caught (SIGKILL cannot).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_reason(exc: KeyboardInterrupt) -> str:
    """How a launcher names the stop in its logs and summary."""
    return signal.Signals(exc.signum).name if isinstance(exc, Terminated) else "Ctrl-C"


class StopSignals:
    """Context manager: inside it the first of SIGINT / SIGTERM / SIGHUP raises
    ``KeyboardInterrupt`` / :class:`Terminated` in the main thread; later ones, or any after
    :meth:`stopping`, are only logged. The previous handlers come back on exit. Main thread only
    (``signal.signal`` refuses other threads)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._stopping = False
        self._previous: dict[int, Any] = {}

    def stopping(self) -> None:
        """The cleanup started: from now on a signal must not interrupt it."""
        self._stopping = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            logger.warning("%s: already stopping %s", name, self.what)
            return
        self._stopping = True
        logger.info("%s: stopping %s", name, self.what)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
