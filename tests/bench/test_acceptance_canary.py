"""The canary in the acceptance run: the users' decision as the learner announced it, its row
in the report, and whether it agrees with the blind evaluation against the base."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from bench.acceptance_canary import (
    CanaryDecision,
    add_canary_options,
    agreement_line,
    agrees,
    canary_env,
    checked_decision,
    markdown,
    serving_in_the_end,
)
from loop.monitor import AdapterEvent

EVIDENCE = {
    "wins": 70,
    "losses": 40,
    "ties": 9,
    "decisive": 110,
    "win_rate": 0.6364,
    "win_low": 0.512,
    "win_high": 0.744,
}


def _decision(outcome: str = "promoted", round_number: int = 1) -> CanaryDecision:
    if outcome == "promoted":
        event = AdapterEvent(
            "adapter.promoted", "policy@v1", "t", from_version="base", evidence=EVIDENCE
        )
    else:
        event = AdapterEvent(
            "adapter.rolled_back",
            "base",
            "t",
            from_version="policy@v1",
            reason="canary: win rate <= 0.480 over 120 votes",
            evidence=EVIDENCE | {"win_low": 0.31, "win_high": 0.48},
        )
    return CanaryDecision.from_event(round_number, "policy@v1", event, 612.4, 260)


@pytest.mark.parametrize(
    ("promoted", "blind", "agree"),
    [
        (True, (0.72, 0.91), True),  # the users promoted what beats the base blind
        (True, (0.45, 0.62), False),  # promoted, but the blind eval cannot tell it from base
        (True, (0.50, 0.70), False),  # a lower bound of exactly 0.5 is not above it
        (False, (0.45, 0.62), True),
        (False, (0.20, 0.40), True),
        (False, (0.61, 0.80), False),  # rolled back what beats the base blind
        (False, None, True),  # the base serves: it does not beat itself
        (True, None, False),
    ],
)
def test_agreement_rule(promoted: bool, blind: tuple[float, float] | None, agree: bool) -> None:
    assert agrees(promoted, blind) is agree


def test_a_decision_reads_the_learners_event() -> None:
    promoted, rolled_back = _decision("promoted"), _decision("rolled_back")
    assert (promoted.outcome, promoted.baseline, promoted.interval) == (
        "promoted",
        "base",
        (0.512, 0.744),
    )
    assert (rolled_back.outcome, rolled_back.baseline) == ("rolled_back", "base")
    assert promoted.votes() == "110 (70/40/9)"
    assert promoted.row() == (
        "| 1 | policy@v1 | base | promoted | 110 (70/40/9) | 0.636 [0.512, 0.744] | 612 | 260 |"
    )


def test_the_version_serving_in_the_end() -> None:
    v1 = _decision("promoted")
    v2 = dataclasses.replace(_decision("rolled_back", 2), version="policy@v2", baseline="policy@v1")
    assert serving_in_the_end([v1, v2], ["policy@v1", "policy@v2"]) == "policy@v1"
    assert serving_in_the_end([_decision("rolled_back")], ["policy@v1"]) == "base"
    # Without canaries the last published version serves.
    assert serving_in_the_end([], ["policy@v1", "policy@v2"]) == "policy@v2"
    assert serving_in_the_end([], []) == "base"


def test_report_rows_and_the_agreement_line() -> None:
    lines = markdown([_decision("promoted")], "policy@v1", 0.95)
    assert "anytime-valid 95% interval" in lines[0]
    assert _decision("promoted").row() in lines
    assert not any(line.startswith("Canary policy@v1 promoted") for line in lines)  # no reason
    line = agreement_line([_decision("promoted")], "policy@v1", (0.721, 0.910))
    assert line == (
        "Canary and blind evaluation agree: yes (policy@v1 promoted against base on 110 "
        "(70/40/9) decisive votes (wins/losses/ties), users' win interval [0.512, 0.744]; blind "
        "win interval of policy@v1 vs base [0.721, 0.910])."
    )


def test_a_roll_back_says_which_version_is_evaluated() -> None:
    text = "\n".join(markdown([_decision("rolled_back")], None, 0.95))
    assert "| rolled back |" in text
    assert "Canary policy@v1 rolled back: win rate <= 0.480 over 120 votes" in text
    assert "evaluated blind is the base (nothing to evaluate)" in text
    line = agreement_line([_decision("rolled_back")], None, None)
    assert line.startswith("Canary and blind evaluation agree: yes (policy@v1 rolled back")
    assert "no blind evaluation: the base serves" in line
    assert agreement_line([], "policy@v1", (0.6, 0.8)) == ""
    assert markdown([], None, 0.95)[0].startswith("No version was published as a canary")


def test_canary_options_become_learner_settings() -> None:
    p = argparse.ArgumentParser()
    add_canary_options(p)
    on = p.parse_args([])
    assert canary_env(on) == {
        "LEARNER_CANARY": "true",
        "LEARNER_CANARY_MAX_VOTES": "300",
        "LEARNER_CANARY_MAX_SECONDS": "2400",
    }
    assert on.canary_share == 0.5
    assert canary_env(p.parse_args(["--no-canary"])) == {"LEARNER_CANARY": "false"}


def test_the_blind_eval_checks_the_decision_on_the_version_it_measured() -> None:
    v1 = _decision("promoted")
    v2 = dataclasses.replace(_decision("rolled_back", 2), version="policy@v2", baseline="policy@v1")
    assert checked_decision([v1, v2], "policy@v1") is v1
    assert checked_decision([v1], "policy@v1") is v1
    assert checked_decision([_decision("rolled_back")], None) == _decision("rolled_back")
    assert checked_decision([], None) is None
