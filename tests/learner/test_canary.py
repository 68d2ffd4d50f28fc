"""The canary controller: evidence from the joined votes, the decision rule, the events."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.canary import CanaryController, CanaryEvidence, CanaryRules, decide, start_canary
from learner.settings import LearnerSettings
from schemas.events import AdapterPromoted, AdapterRolledBack, EventBase
from tests.events import ab_pair, pref, rating
from tests.learner.factories import Feeder, new_store

RULES = CanaryRules(min_votes=20, max_votes=400, max_seconds=3600)


@pytest.mark.parametrize(
    ("evidence", "outcome"),
    [
        (CanaryEvidence(wins=45, losses=15), "promoted"),
        (CanaryEvidence(wins=15, losses=45), "rolled_back"),
        (CanaryEvidence(wins=12, losses=8), None),  # not enough evidence either way
        (CanaryEvidence(wins=8, losses=2), None),  # below min_votes
        (CanaryEvidence(wins=205, losses=195), "rolled_back"),  # the vote cap, undecided
        (CanaryEvidence(canary_answers=30, canary_empty=9), "rolled_back"),  # guard: empty
        (
            CanaryEvidence(canary_thumbs=10, canary_down=8, baseline_thumbs=10, baseline_down=2),
            "rolled_back",
        ),  # guard: thumbs down
    ],
)
def test_decision_rule(evidence: CanaryEvidence, outcome: str | None) -> None:
    assert decide(evidence, 0.0, RULES)[0] == outcome


def test_undecided_canary_is_rolled_back_after_the_time_cap() -> None:
    ev = CanaryEvidence(wins=12, losses=8)
    assert decide(ev, 3599.0, RULES)[0] is None
    outcome, reason = decide(ev, 3600.0, RULES)
    assert outcome == "rolled_back" and "undecided" in reason


def test_a_margin_promotes_a_canary_that_is_not_worse() -> None:
    ev = CanaryEvidence(wins=300, losses=300)
    assert decide(ev, 0.0, CanaryRules(max_votes=10_000))[0] is None
    assert decide(ev, 0.0, CanaryRules(margin=0.1, max_votes=10_000))[0] == "promoted"


def test_the_rules_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    settings = LearnerSettings(data_dir=str(tmp_path / "data"), metrics_port=0)
    assert CanaryRules() == CanaryRules.from_settings(settings)


def _controller(tmp_path: Path, sent: list[EventBase], promoted: list[str]) -> CanaryController:
    settings = LearnerSettings(
        data_dir=str(tmp_path / "data"), metrics_port=0, canary=True, canary_min_votes=10
    )
    return CanaryController(settings, new_store(tmp_path), sent.append, promoted.append)


def _vote_for(feeder: Feeder, i: int, canary_first: bool, canary_wins: bool) -> None:
    first, second = ("policy@v2", "policy@v1") if canary_first else ("policy@v1", "policy@v2")
    choice = "a" if canary_first == canary_wins else "b"
    feeder.feed(ab_pair(f"p{i}", first, second, t=i), pref(f"p{i}", choice=choice, t=i + 0.5))


@pytest.mark.parametrize("canary_wins", [True, False])
def test_controller_decides_from_the_stored_votes(tmp_path: Path, canary_wins: bool) -> None:
    sent: list[EventBase] = []
    promoted: list[str] = []
    controller = _controller(tmp_path, sent, promoted)
    feeder = Feeder(controller.store)
    start_canary(controller.store, "policy@v2", "policy@v1", now=0.0)
    # Votes between two other versions, or a tie, say nothing about this canary.
    feeder.feed(ab_pair("other", "policy@v1", "base"), pref("other", choice="a"))
    feeder.feed(ab_pair("tie", "policy@v2", "policy@v1"), pref("tie", choice="tie"))
    for i in range(5):
        _vote_for(feeder, i, canary_first=i % 2 == 0, canary_wins=canary_wins)
    assert controller.tick(now=10.0) is None and not sent  # 5 votes: too few
    for i in range(5, 60):
        _vote_for(feeder, i, canary_first=i % 2 == 0, canary_wins=canary_wins)
    outcome = controller.tick(now=20.0)
    (event,) = sent
    assert event.evidence is not None and event.evidence["ties"] == 1  # type: ignore[attr-defined]
    if canary_wins:
        assert outcome == "promoted" and isinstance(event, AdapterPromoted)
        assert (event.version, event.previous_version) == ("policy@v2", "policy@v1")
        assert event.evidence["wins"] == 60 and promoted == ["policy@v2"]
    else:
        assert outcome == "rolled_back" and isinstance(event, AdapterRolledBack)
        assert (event.from_version, event.to_version) == ("policy@v2", "policy@v1")
        assert event.evidence["losses"] == 60 and promoted == []
    assert controller.active() is None and controller.tick(now=30.0) is None


def test_a_failed_send_is_retried_as_the_same_event(tmp_path: Path) -> None:
    sent: list[EventBase] = []

    def flaky(event: EventBase) -> None:
        sent.append(event)
        if len(sent) == 1:
            raise OSError("broker down")

    controller = _controller(tmp_path, [], [])
    controller.emit = flaky
    feeder = Feeder(controller.store)
    start_canary(controller.store, "policy@v2", "base", now=0.0)
    for i in range(40):
        feeder.feed(ab_pair(f"p{i}", "policy@v2", "base", t=i), pref(f"p{i}", choice="a"))
    with pytest.raises(OSError):
        controller.tick(now=1.0)
    assert controller.active() is not None  # not recorded: decided again next time
    assert controller.tick(now=2.0) == "promoted"
    assert sent[0].event_id == sent[1].event_id


def test_guard_rolls_back_on_thumbs_down_before_enough_votes(tmp_path: Path) -> None:
    sent: list[EventBase] = []
    controller = _controller(tmp_path, sent, [])
    feeder = Feeder(controller.store)
    start_canary(controller.store, "policy@v2", "policy@v1", now=0.0)
    for i in range(12):
        feeder.feed(ab_pair(f"p{i}", "policy@v2", "policy@v1", t=i))
        feeder.feed(rating(f"p{i}-r0", value="down", t=i + 0.1))  # the canary's answer
        feeder.feed(rating(f"p{i}-r1", value="up", t=i + 0.2))
    assert controller.tick(now=1.0) == "rolled_back"
    assert "guard" in sent[0].reason  # type: ignore[attr-defined]


def test_a_guarded_canary_must_show_it_is_better_whatever_the_margin() -> None:
    """26 of 40: the lower bound (0.33) clears 0.5 - 0.2 but not 0.5."""
    rules = CanaryRules(margin=0.2, min_votes=20, max_votes=1000, guarded_max_votes=200)
    ev = CanaryEvidence(wins=26, losses=14)
    assert decide(ev, 0.0, rules.for_canary(guarded=False))[0] == "promoted"
    assert decide(ev, 0.0, rules.for_canary(guarded=True))[0] is None
    assert decide(CanaryEvidence(wins=34, losses=6), 0.0, rules.for_canary(True))[0] == "promoted"


def test_a_guarded_canary_is_rolled_back_at_its_own_cap() -> None:
    rules = CanaryRules(guarded_max_votes=200)  # the ordinary cap: 1000
    assert decide(CanaryEvidence(wins=120, losses=80), 0.0, rules)[0] is None
    guarded = rules.for_canary(guarded=True)
    assert decide(CanaryEvidence(wins=119, losses=80), 0.0, guarded)[0] is None
    outcome, reason = decide(CanaryEvidence(wins=120, losses=80), 0.0, guarded)
    assert outcome == "rolled_back" and "undecided after 200 votes" in reason


def test_the_guarded_cap_cannot_be_below_the_votes_a_decision_needs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="canary_guarded_max_votes"):
        LearnerSettings(data_dir=str(tmp_path), canary_min_votes=50, canary_guarded_max_votes=40)


@pytest.mark.parametrize("guarded", [False, True])
def test_controller_holds_a_guarded_canary_to_the_stricter_rules(
    tmp_path: Path, guarded: bool
) -> None:
    """The same 26 wins in 40 votes: an ordinary canary with a margin of 0.2 is promoted, a
    guarded one reaches its cap of 40 undecided and is rolled back, and its event says so."""
    settings = LearnerSettings(
        data_dir=str(tmp_path / "data"),
        metrics_port=0,
        canary=True,
        canary_min_votes=10,
        canary_margin=0.2,
        canary_guarded_max_votes=40,
    )
    sent: list[EventBase] = []
    controller = CanaryController(settings, new_store(tmp_path), sent.append)
    start_canary(controller.store, "policy@v2", "policy@v1", now=0.0, guarded=guarded)
    active = controller.active()
    assert active is not None and active.guarded == guarded
    feeder = Feeder(controller.store)
    for i in range(40):
        _vote_for(feeder, i, canary_first=i % 2 == 0, canary_wins=i < 26)
    outcome = controller.tick(now=1.0)
    (event,) = sent
    if not guarded:
        assert outcome == "promoted" and isinstance(event, AdapterPromoted)
        assert event.evidence is not None and "guarded" not in event.evidence
        return
    assert outcome == "rolled_back" and isinstance(event, AdapterRolledBack)
    assert event.reason.startswith("canary: guarded (margin 0, at most 40 decisive votes)")
    assert "undecided after 40 votes" in event.reason
    assert event.evidence is not None and event.evidence["guarded"] == 1
    assert controller.active() is None


def test_controller_promotes_a_guarded_canary_that_shows_it_is_better(tmp_path: Path) -> None:
    sent: list[EventBase] = []
    controller = _controller(tmp_path, sent, [])
    start_canary(controller.store, "policy@v2", "policy@v1", now=0.0, guarded=True)
    feeder = Feeder(controller.store)
    for i in range(40):
        _vote_for(feeder, i, canary_first=i % 2 == 0, canary_wins=i < 34)
    assert controller.tick(now=1.0) == "promoted"
    (event,) = sent
    assert isinstance(event, AdapterPromoted) and event.evidence is not None
    assert event.evidence["guarded"] == 1 and float(event.evidence["win_low"]) > 0.5
