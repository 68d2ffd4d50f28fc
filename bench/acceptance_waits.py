"""What the acceptance run waits for: the learner's cycles (read from its cycle checkpoint),
serving's versions (``/admin/adapters``) and the users' accepted comparisons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loop.monitor import admin_adapters

if TYPE_CHECKING:
    from loop.demo import Demo

T = TypeVar("T")


def poll(
    found: Callable[[], T | None],
    timeout: float,
    what: str,
    check: Callable[[], None] = lambda: None,
    interval: float = 1.0,
) -> T:
    """``found()`` once it is not None; ``check()`` between tries may raise (a service died);
    TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: nothing within {timeout:.0f}s")
        check()
        time.sleep(interval)


def accepted_comparisons(demo: Demo) -> int:
    return int(demo.sim.stats.snapshot()["feedback_ok"].get("preference", 0)) if demo.sim else 0


def learner_cycle(demo: Demo) -> tuple[int, str | None]:
    """The learner's latest cycle: its id (0 before any) and its outcome once finished. Read
    from the cycle checkpoint, which outlives the process: ``--max-cycles`` ends it right after
    its last cycle (and, with the canary on, the users' decision)."""
    try:
        ckpt = json.loads((demo.data_dir / "learner" / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return 0, None
    outcome = ckpt.get("outcome") if ckpt.get("stage") == "done" else None
    return int(ckpt.get("cycle_id", 0)), outcome


def after_cycle(demo: Demo, before: int, finished: bool) -> int | str | None:
    """The id of a cycle started after cycle ``before`` (``finished``: its outcome once done),
    or None yet; raises if the learner exited without one."""
    alive = demo.learner is None or demo.learner.running  # before reading: then it is final
    cycle, outcome = learner_cycle(demo)
    if cycle > before and (outcome or not finished):
        return outcome if finished else cycle
    if not alive:
        assert demo.learner is not None
        raise RuntimeError(f"learner exited:\n{demo.learner.log_tail()}")
    return None


def wait_cycle(demo: Demo, before: int, timeout: float) -> str:
    """Block until the learner finished a cycle after cycle ``before``; its outcome."""
    return str(poll(lambda: after_cycle(demo, before, True), timeout, "no cycle finished"))


def collect_until_cycle_starts(demo: Demo, before: int, timeout: float) -> None:
    """With the canary on, the users have voted since the last cycle ended (on its canary
    too): they go on until the learner starts its next cycle, then pause while it trains."""
    poll(lambda: after_cycle(demo, before, False), timeout, "no cycle started")
    demo.pause_users()


def finished_checkpoint(path: Path, timeout: float = 120.0) -> dict[str, Any]:
    """The cycle checkpoint once it says "done" (the cycle counter is bumped just before)."""
    deadline = time.monotonic() + timeout
    ckpt: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ckpt = json.loads(path.read_text())
        if ckpt.get("stage") == "done":
            break
        time.sleep(0.5)
    return ckpt


def wait_serving(demo: Demo, version: str | None, timeout: float, role: str = "serving") -> None:
    """Until serving answers with ``version`` as its ``role`` version (serving, or canary:
    None once no canary runs)."""

    def there() -> bool | None:
        adapters = admin_adapters(demo.root, demo.admin_token)
        return True if adapters is not None and adapters.get(f"{role}_version") == version else None

    poll(there, timeout, f"serving's {role} version {version}", interval=0.5)
