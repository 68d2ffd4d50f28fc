"""Waiting in async tests (and the test benchmarks) for a condition that background work makes
true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(predicate: Callable[[], bool], timeout: float = 60.0, poll: float = 0.05) -> float:
    """Return the seconds waited once ``predicate()`` holds, checking every ``poll`` seconds;
    AssertionError after ``timeout`` seconds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(poll)
    return time.monotonic() - start
