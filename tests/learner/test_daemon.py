"""What ``learner run`` does at a trigger check: start a cycle, wait, or exit after
``--max-cycles`` (with the canary on, only once the users decided the last cycle's canary)."""

from __future__ import annotations

import pytest

from learner.daemon import next_step


def _never_asked() -> bool:
    raise AssertionError("the trigger is not checked")


@pytest.mark.parametrize(
    ("cycles", "max_cycles", "waiting", "due", "step"),
    [
        (0, None, False, True, "cycle"),
        (0, None, False, False, "idle"),
        (3, None, False, True, "cycle"),  # no limit
        (1, 2, False, True, "cycle"),
        (2, 2, False, True, "exit"),  # the last cycle's canary is decided (or none ran)
    ],
)
def test_the_trigger_starts_a_cycle_until_the_limit(
    cycles: int, max_cycles: int | None, waiting: bool, due: bool, step: str
) -> None:
    assert next_step(cycles, max_cycles, waiting, lambda: due) == step


def test_an_undecided_canary_holds_the_next_cycle_and_the_exit() -> None:
    # No new cycle while the users have not decided: the next trains on what they accepted.
    assert next_step(1, None, True, _never_asked) == "idle"
    # After the last cycle, the daemon waits for its canary's decision before it exits.
    assert next_step(2, 2, True, _never_asked) == "idle"
    assert next_step(2, 2, False, _never_asked) == "exit"
