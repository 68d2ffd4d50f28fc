"""The acceptance report with the canary on: the users' decision beside the blind evaluation,
the line that says whether they agree, and the win rate where the results summary reads it."""

from __future__ import annotations

import argparse
import re
from typing import Any

from bench.acceptance import Round, _markdown
from bench.acceptance_canary import CanaryDecision
from bench.summary import WIN_RATE
from loop.monitor import AdapterEvent


def _args(canary: bool = True) -> argparse.Namespace:
    return argparse.Namespace(
        preference="loop.preferences:concise",
        noise=1.0,
        comparisons=500,
        rounds=2,
        concurrency=8,
        max_tokens=128,
        corrections="off",
        thumbs_rate=0.1,
        eval_noise=0.0,
        eval_samples=3,
        pair_show_floor=1.0,
        canary=canary,
        canary_share=0.5,
        canary_max_votes=300,
        canary_max_minutes=40.0,
        seed=3,
        user_seed=7,
    )


def _decision(round_number: int, version: str, outcome: str, baseline: str) -> CanaryDecision:
    evidence = {"wins": 60, "losses": 30, "ties": 5, "win_rate": 0.6667}
    evidence |= {"win_low": 0.52, "win_high": 0.79}
    if outcome == "promoted":
        event = AdapterEvent("adapter.promoted", version, "t", False, baseline, "", evidence)
    else:
        event = AdapterEvent("adapter.rolled_back", baseline, "t", False, version, "", evidence)
    return CanaryDecision.from_event(round_number, version, event, 900.0, 300)


def _verdict(decisions: list[CanaryDecision], evaluated: str | None) -> dict[str, Any]:
    verdict: dict[str, Any] = {"passed": False, "canary": decisions}
    if evaluated is not None:
        verdict |= {
            "passed": True,
            "checks": {"win rate >= 0.70": True},
            "version": evaluated,
            "win_rate": 0.81,
            "interval": (0.74, 0.86),
            "n": 174,
            "wins": 138,
            "losses": 30,
            "ties": 6,
            "kl": 6.1,
            "words": (27.0, 44.0),
        }
    return verdict


ROUNDS = [
    Round(1, 250, 480.0, "published", "policy@v1", 1900.0, 1902.0),
    Round(2, 812, 30.0, "published", "policy@v2", 2000.0, 2001.0),
]
SUMMARY = {"events_missing": {}, "data_dir": "var/accept"}


def test_the_report_puts_the_users_decision_beside_the_blind_eval() -> None:
    decisions = [
        _decision(1, "policy@v1", "promoted", "base"),
        _decision(2, "policy@v2", "promoted", "policy@v1"),
    ]
    text = _markdown(ROUNDS, _verdict(decisions, "policy@v2"), SUMMARY, _args(), {}, 3600.0)
    assert "Canary on: each published version first served as a canary on 50% of pairs" in text
    assert "users' seed 7; blind evaluation seed 3," in text  # both seeds, to repeat the run
    assert "| 2 | policy@v2 | policy@v1 | promoted | 90 (60/30/5) | 0.667 [0.520, 0.790] |" in text
    lines = text.splitlines()
    blind = next(i for i, line in enumerate(lines) if line.startswith("Blind eval of policy@v2"))
    assert lines[blind + 2].startswith("Canary and blind evaluation agree: yes (policy@v2 promoted")
    match = re.search(WIN_RATE, text, re.M)  # the results summary still reads the blind win
    assert match is not None and match.group(1) == "0.810"


def test_a_rolled_back_last_canary_is_reported_with_the_version_evaluated() -> None:
    decisions = [
        _decision(1, "policy@v1", "promoted", "base"),
        _decision(2, "policy@v2", "rolled_back", "policy@v1"),
    ]
    text = _markdown(ROUNDS, _verdict(decisions, "policy@v1"), SUMMARY, _args(), {}, 3600.0)
    assert "The last canary, policy@v2, was rolled back" in text
    assert "evaluated blind is policy@v1" in text
    # The blind eval measured policy@v1 against the base: it checks the users' decision on
    # policy@v1; policy@v2 was compared with policy@v1 by the users only.
    assert "Canary and blind evaluation agree: yes (policy@v1 promoted against base" in text
    assert "policy@v2, was rolled back to policy@v1: the users compared it with policy@v1" in text


def test_every_canary_rolled_back_leaves_nothing_to_evaluate() -> None:
    decisions = [_decision(2, "policy@v1", "rolled_back", "base")]
    text = _markdown(ROUNDS, _verdict(decisions, None), SUMMARY, _args(), {}, 3600.0)
    assert "No learned version serves in the end" in text
    assert "Canary and blind evaluation agree: yes (policy@v1 rolled back" in text
    assert "Verdict: **FAILED**" in text


def test_without_the_canary_the_report_says_so() -> None:
    text = _markdown(ROUNDS, _verdict([], "policy@v2"), SUMMARY, _args(False), {}, 3600.0)
    assert "Canary off: each published version served everyone at once." in text
    assert "agree" not in text and "| canary |" not in text
