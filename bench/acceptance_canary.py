"""The users decide, in the acceptance run: each published version first serves as a canary.

With the canary on (the default; ``--no-canary`` turns it off) the learner publishes a version
that passed its gates as a canary: serving answers a share of pairs with one canary answer and
one from the serving version, and the learner promotes or rolls the canary back from the
users' votes on those pairs (``learner/canary.py``). The simulated users keep voting while it
runs, with the same simulator as the rounds (same preference, noise and random stream), and
the run waits for the decision on the adapters topic (``adapter.promoted`` /
``adapter.rolled_back``, with the votes and the interval as evidence) and for serving to follow
it. The canary's comparisons are comparisons like any other: they count toward the next
round's cycle, which starts once the canary is decided and enough new comparisons arrived
(``learner run --max-cycles`` keeps the last round's from starting a cycle of its own).

The report puts the users' decision beside the blind evaluation of the version that serves in
the end, and says whether they agree: promoted and the blind win interval above 0.5, or rolled
back and that interval not above 0.5.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.acceptance_progress import Progress
from bench.acceptance_waits import accepted_comparisons, poll, wait_serving
from loop.monitor import AdapterEvent, scrape
from loop.service_options import add_canary_option

if TYPE_CHECKING:
    from loop.demo import Demo

Interval = tuple[float, float]


@dataclass(frozen=True)
class CanaryDecision:
    """One canary and the users' decision on it, as the learner announced it."""

    round: int
    version: str
    baseline: str  # the version it was compared with (and serves on a roll back)
    outcome: str  # "promoted" | "rolled_back"
    reason: str
    evidence: dict[str, Any]
    seconds: float  # from serving answering with it to the decision
    comparisons: int  # the users' comparisons meanwhile

    @staticmethod
    def from_event(
        round_number: int, version: str, event: AdapterEvent, seconds: float, comparisons: int
    ) -> CanaryDecision:
        promoted = event.kind == "adapter.promoted"
        return CanaryDecision(
            round=round_number,
            version=version,
            baseline=(event.from_version if promoted else event.version) or "base",
            outcome="promoted" if promoted else "rolled_back",
            reason=event.reason.removeprefix("canary: "),
            evidence=dict(event.evidence or {}),
            seconds=seconds,
            comparisons=comparisons,
        )

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    @property
    def interval(self) -> Interval | None:
        low, high = self.evidence.get("win_low"), self.evidence.get("win_high")
        return None if low is None or high is None else (float(low), float(high))

    def votes(self) -> str:
        """``173 (101/72/9)``: decisive votes (wins/losses/ties)."""
        wins, losses = int(self.evidence.get("wins", 0)), int(self.evidence.get("losses", 0))
        ties = int(self.evidence.get("ties", 0))
        return f"{wins + losses} ({wins}/{losses}/{ties})"

    def row(self) -> str:
        interval = self.interval
        rate = self.evidence.get("win_rate")
        shown = "-" if rate is None else f"{float(rate):.3f}"
        if interval is not None:
            shown += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        return (
            f"| {self.round} | {self.version} | {self.baseline} "
            f"| {self.outcome.replace('_', ' ')} | {self.votes()} | {shown} "
            f"| {self.seconds:.0f} | {self.comparisons} |"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agrees(promoted: bool, blind: Interval | None) -> bool:
    """Whether the users' canary decision and the blind evaluation against the base say the
    same: promoted and the blind win interval above 0.5, or rolled back and that interval not
    above 0.5 (no blind evaluation: the base serves, which does not beat itself)."""
    above = blind is not None and blind[0] > 0.5
    return above if promoted else not above


def serving_in_the_end(decisions: list[CanaryDecision], published: list[str]) -> str:
    """The version the users get once the run is over: with canaries, the last promoted one
    (the base if none was); without, the last published one."""
    if not decisions:
        return published[-1] if published else "base"
    promoted = [d.version for d in decisions if d.promoted]
    return promoted[-1] if promoted else "base"


def markdown(
    decisions: list[CanaryDecision], evaluated: str | None, confidence: float
) -> list[str]:
    """The canaries' table: each decision with its votes and interval, and why."""
    if not decisions:
        return ["No version was published as a canary, so the users decided nothing.", ""]
    lines = [
        f"Canaries: the users' votes on canary-vs-serving pairs decided each published version "
        f"(win rate over decisive votes with its anytime-valid {confidence:.0%} interval).",
        "",
        "| round | canary | against | decision | decisive votes (wins/losses/ties) "
        "| win rate [interval] | s to decision | comparisons meanwhile |",
        "|---|---|---|---|---|---|---|---|",
        *(d.row() for d in decisions),
        "",
    ]
    # The learner gives a reason for a roll back (a promotion's is its interval, in the table).
    reasons = [d for d in decisions if d.reason]
    lines += [f"Canary {d.version} {d.outcome.replace('_', ' ')}: {d.reason}" for d in reasons]
    lines += [""] if reasons else []
    last = decisions[-1]
    if not last.promoted:
        lines += [
            f"The last canary, {last.version}, was rolled back: the version that serves in the "
            f"end and is evaluated blind is {evaluated or 'the base (nothing to evaluate)'}.",
            "",
        ]
    return lines


def checked_decision(
    decisions: list[CanaryDecision], evaluated: str | None
) -> CanaryDecision | None:
    """The users' decision that the blind evaluation checks: the one on the evaluated version
    (the version serving in the end was a promoted canary), or, when the base serves in the
    end, the last one (rolled back). A canary rolled back to an earlier learned version was
    compared with that version, not with the base: no blind evaluation measures it."""
    if evaluated is None:
        return decisions[-1] if decisions else None
    return next((d for d in reversed(decisions) if d.version == evaluated), None)


def agreement_line(
    decisions: list[CanaryDecision], evaluated: str | None, blind: Interval | None
) -> str:
    """``Canary and blind evaluation agree: yes (...)``; "" when no canary was evaluated."""
    checked = checked_decision(decisions, evaluated)
    if checked is None:
        return ""
    interval = checked.interval
    users = "" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    blind_text = (
        "no blind evaluation: the base serves"
        if blind is None
        else f"blind win interval of {evaluated} vs base [{blind[0]:.3f}, {blind[1]:.3f}]"
    )
    line = (
        f"Canary and blind evaluation agree: "
        f"{'yes' if agrees(checked.promoted, blind) else 'no'} ({checked.version} "
        f"{checked.outcome.replace('_', ' ')} against {checked.baseline} on {checked.votes()} "
        f"decisive votes (wins/losses/ties), users' win interval{users}; {blind_text})."
    )
    last = decisions[-1]
    if last is not checked:
        line += (
            f" The last canary, {last.version}, was rolled back to {last.baseline}: the users "
            f"compared it with {last.baseline}, and no blind evaluation measured it."
        )
    return line


def decision_event(events: list[AdapterEvent], canary: str) -> AdapterEvent | None:
    return next((e for e in events if e.decides(canary)), None)


def decide_canary(
    demo: Demo, number: int, version: str, args: argparse.Namespace, progress: Progress
) -> CanaryDecision:
    """The users vote until the learner decides ``version`` (serving answers with it as the
    canary); the decision once serving follows it."""
    assert demo.watcher is not None
    watcher, started, before = demo.watcher, time.monotonic(), accepted_comparisons(demo)
    progress.phase = f"round {number}/{args.rounds}: canary {version}, the users decide"

    def decided() -> AdapterEvent | None:
        exited = demo.learner is not None and not demo.learner.running  # before reading
        event = decision_event(watcher.snapshot(), version)
        if event is None and exited:
            # ``--max-cycles``: its last act may have been the decision, still on its way here.
            what = f"the learner exited; decision on canary {version}"
            event = poll(lambda: decision_event(watcher.snapshot(), version), 30, what)
        metrics = scrape(f"http://127.0.0.1:{demo.metrics_port}/metrics")
        progress.canary_votes = metrics.get("rlhf_learner_canary_decisive_votes")
        return event

    # The learner rolls back an undecided canary at its time cap; a margin for its next tick.
    event = poll(decided, args.canary_max_minutes * 60 + 600, f"decision on canary {version}")
    progress.canary_votes = None
    decision = CanaryDecision.from_event(
        number, version, event, time.monotonic() - started, accepted_comparisons(demo) - before
    )
    wait_serving(demo, version if decision.promoted else decision.baseline, 300)
    wait_serving(demo, None, 300, "canary")
    print(
        f"round {number}: canary {version} {decision.outcome} on {decision.votes()} decisive "
        f"votes (wins/losses/ties) {decision.reason}".rstrip(),
        flush=True,
    )
    return decision


def add_canary_options(p: argparse.ArgumentParser) -> None:
    add_canary_option(p)
    p.add_argument(
        "--canary-max-votes",
        type=int,
        default=300,
        help="decisive votes after which an undecided canary is rolled back "
        "(LEARNER_CANARY_MAX_VOTES)",
    )
    p.add_argument(
        "--canary-max-minutes",
        type=float,
        default=40.0,
        help="minutes after which an undecided canary is rolled back (LEARNER_CANARY_MAX_SECONDS)",
    )
    p.add_argument(
        "--canary-share",
        type=float,
        default=0.5,
        help="share of pairs that compare the canary with the serving version "
        "(SERVING_CANARY_SHARE)",
    )


def canary_env(args: argparse.Namespace) -> dict[str, str]:
    if not args.canary:
        return {"LEARNER_CANARY": "false"}
    return {
        "LEARNER_CANARY": "true",
        "LEARNER_CANARY_MAX_VOTES": str(args.canary_max_votes),
        "LEARNER_CANARY_MAX_SECONDS": f"{args.canary_max_minutes * 60:g}",
    }


def write_canary_json(path: Path, decisions: list[CanaryDecision], verdict: dict[str, Any]) -> None:
    """The canaries' decisions and the blind evaluation they are checked against."""
    path.write_text(
        json.dumps(
            {
                "decisions": [d.to_dict() for d in decisions],
                "evaluated": verdict.get("version"),
                "blind_interval": verdict.get("interval"),
            },
            indent=2,
        )
    )


def canary_setup(args: argparse.Namespace) -> str:
    if not args.canary:
        return "Canary off: each published version served everyone at once."
    return (
        f"Canary on: each published version first served as a canary on "
        f"{args.canary_share:.0%} of pairs (one answer each beside the serving version) while "
        f"the users kept voting, until the learner promoted or rolled it back (undecided after "
        f"{args.canary_max_votes} decisive votes or {args.canary_max_minutes:g} min: rolled "
        f"back); its comparisons count toward the next round."
    )
