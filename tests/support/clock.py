"""A monotonic clock that tests move by hand, so timing logic runs without waiting."""

from __future__ import annotations


class FakeClock:
    """Callable like ``time.monotonic``; set or advance ``now`` to let time pass."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
