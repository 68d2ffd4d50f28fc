"""The canary decided by the users' votes: promote or roll back a new version automatically.

With ``LEARNER_CANARY=true`` a published version first serves as the canary: serving answers a
share of pairs with one answer from the canary and one from the serving version, sides shuffled,
so every vote on such a pair is a blind A/B comparison. The controller lives in the learner, not
in serving, because only the learner sees every replica's votes (serving replicas each see their
own share) and already joins each vote to the versions that produced the two answers.

Decision (``decide``, a pure function): the canary's win rate over decisive votes (ties and
"both bad" say nothing about which is better) gets an anytime-valid confidence sequence
(``common.stats.mean_confidence_sequence``: Howard et al. 2021), so the rule may be checked after
every vote without inflating the error rate, unlike a fixed-sample test peeked at repeatedly:
promote once the lower bound clears 0.5 - margin, roll back once the upper bound is below 0.5,
and roll back when a cap on votes or time is reached undecided. A guard acts at once, before any
vote count: too many empty canary answers, or a thumbs-down rate well above the serving
version's. Decisions go out as ``adapter.promoted`` / ``adapter.rolled_back`` with the evidence,
which every serving replica follows; the event id is derived from the decision, so a decision
re-sent after a crash is the same event.

A **guarded** canary is one whose reward model the gate could not certify (learner.gates,
``LEARNER_RM_GATE_UNCERTAIN=canary``): nothing but the users vouches for it, so it must show it
is better (margin 0, whatever ``canary_margin`` says) and gets a vote cap of its own
(``canary_guarded_max_votes``, below the ordinary one by default), so one that is not clearly
better is rolled back sooner and the next cycle, with more votes, comes sooner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from prometheus_client import Counter, Gauge

from common.stats import mean_confidence_sequence
from learner.settings import LearnerSettings
from learner.store import TrainingStore
from schemas.events import AdapterPromoted, AdapterRolledBack, EventBase, Evidence

logger = logging.getLogger(__name__)

Outcome = Literal["promoted", "rolled_back"]
MIN_THUMBS = 10  # per version, before the thumbs-down guard compares them

DECISIONS = Counter("rlhf_learner_canary_decisions_total", "canary decisions", ["outcome"])
VOTES = Gauge("rlhf_learner_canary_decisive_votes", "decisive canary-vs-serving votes so far")
WIN_LOW = Gauge("rlhf_learner_canary_win_rate_low", "lower bound of the canary's win rate")
WIN_HIGH = Gauge("rlhf_learner_canary_win_rate_high", "upper bound of the canary's win rate")


def _default(rule: str) -> Any:
    """The default of the setting ``canary_<rule>`` (LEARNER_CANARY_ALPHA...): each rule's one
    default lives in ``LearnerSettings``, with its bounds and description."""
    return LearnerSettings.model_fields[f"canary_{rule}"].default


@dataclass(frozen=True)
class CanaryRules:
    """The decision's parameters; each is the setting of the same name behind ``canary_``."""

    alpha: float = _default("alpha")
    margin: float = _default("margin")
    min_votes: int = _default("min_votes")
    max_votes: int = _default("max_votes")
    guarded_max_votes: int = _default("guarded_max_votes")
    max_seconds: float = _default("max_seconds")
    guard_min_answers: int = _default("guard_min_answers")
    guard_max_empty_share: float = _default("guard_max_empty_share")
    guard_max_down_excess: float = _default("guard_max_down_excess")

    @staticmethod
    def from_settings(s: LearnerSettings) -> CanaryRules:
        return CanaryRules(**{f.name: getattr(s, f"canary_{f.name}") for f in fields(CanaryRules)})

    def for_canary(self, guarded: bool) -> CanaryRules:
        """The rules ``decide`` applies: a guarded canary's with margin 0 and its own cap."""
        return replace(self, margin=0.0, max_votes=self.guarded_max_votes) if guarded else self


@dataclass(frozen=True)
class CanaryEvidence:
    wins: int = 0  # votes for the canary's answer over the serving version's
    losses: int = 0
    ties: int = 0  # ties and "both bad"
    canary_answers: int = 0
    canary_empty: int = 0
    canary_thumbs: int = 0
    canary_down: int = 0
    baseline_thumbs: int = 0
    baseline_down: int = 0

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    def interval(self, alpha: float) -> tuple[float, float]:
        return mean_confidence_sequence(self.wins, self.decisive, alpha)

    def as_event(self, alpha: float) -> Evidence:
        low, high = self.interval(alpha)
        out: Evidence = {k: v for k, v in asdict(self).items()}
        out |= {"decisive": self.decisive, "win_low": round(low, 4), "win_high": round(high, 4)}
        if self.decisive:
            out["win_rate"] = round(self.wins / self.decisive, 4)
        return out


def decide(
    ev: CanaryEvidence, age_seconds: float, rules: CanaryRules
) -> tuple[Outcome | None, str]:
    """The decision for a canary with evidence ``ev``, or (None, why not yet)."""
    if ev.canary_answers >= rules.guard_min_answers:
        empty = ev.canary_empty / ev.canary_answers
        if empty > rules.guard_max_empty_share:
            return "rolled_back", f"guard: {empty:.0%} of the canary's answers are empty"
    if ev.canary_thumbs >= MIN_THUMBS and ev.baseline_thumbs >= MIN_THUMBS:
        excess = ev.canary_down / ev.canary_thumbs - ev.baseline_down / ev.baseline_thumbs
        if excess > rules.guard_max_down_excess:
            return "rolled_back", f"guard: thumbs-down rate {excess:+.0%} above the serving one"
    low, high = ev.interval(rules.alpha)
    if ev.decisive >= rules.min_votes:
        if low > 0.5 - rules.margin:
            return "promoted", f"win rate >= {low:.3f} over {ev.decisive} votes"
        if high < 0.5:
            return "rolled_back", f"win rate <= {high:.3f} over {ev.decisive} votes"
    if ev.decisive >= rules.max_votes:
        return "rolled_back", f"undecided after {ev.decisive} votes ([{low:.3f}, {high:.3f}])"
    if age_seconds >= rules.max_seconds:
        return "rolled_back", f"undecided after {age_seconds:.0f} s ({ev.decisive} votes)"
    return None, f"{ev.decisive} votes, win rate in [{low:.3f}, {high:.3f}]"


# Two-answer pairs with one answer from each version, and the vote on them.
_VOTES_SQL = """
SELECT v.choice, a.adapter_version FROM votes v
JOIN served a ON a.pair_id = v.pair_id AND a.idx = 0
JOIN served b ON b.pair_id = v.pair_id AND b.idx = 1
WHERE v.choice IS NOT NULL
  AND ((a.adapter_version = :c AND b.adapter_version = :b)
       OR (a.adapter_version = :b AND b.adapter_version = :c))
"""
_THUMBS_SQL = """
SELECT s.adapter_version, r.rating, COUNT(*) FROM ratings r
JOIN served s ON s.response_id = r.response_id
WHERE s.adapter_version IN (:c, :b) GROUP BY 1, 2
"""


def gather_evidence(cur: sqlite3.Cursor, canary: str, baseline: str) -> CanaryEvidence:
    wins = losses = ties = 0
    for choice, first_version in cur.execute(_VOTES_SQL, {"c": canary, "b": baseline}):
        if choice not in ("a", "b"):
            ties += 1
        elif (choice == "a") == (first_version == canary):
            wins += 1
        else:
            losses += 1
    answers, empty = cur.execute(
        "SELECT COUNT(*), COALESCE(SUM(trim(text) = ''), 0) FROM served WHERE adapter_version=?",
        (canary,),
    ).fetchone()
    thumbs = {(v, r): n for v, r, n in cur.execute(_THUMBS_SQL, {"c": canary, "b": baseline})}
    return CanaryEvidence(
        wins=wins,
        losses=losses,
        ties=ties,
        canary_answers=int(answers),
        canary_empty=int(empty),
        canary_thumbs=thumbs.get((canary, "up"), 0) + thumbs.get((canary, "down"), 0),
        canary_down=thumbs.get((canary, "down"), 0),
        baseline_thumbs=thumbs.get((baseline, "up"), 0) + thumbs.get((baseline, "down"), 0),
        baseline_down=thumbs.get((baseline, "down"), 0),
    )


def start_canary(
    store: TrainingStore,
    version: str,
    baseline: str,
    now: float | None = None,
    guarded: bool = False,
) -> None:
    """Record that ``version`` now runs as the canary against ``baseline`` (idempotent);
    ``guarded``: under the stricter rules (``CanaryRules.for_canary``)."""
    with store.transaction() as cur:
        cur.execute(
            "INSERT OR IGNORE INTO canaries (version, baseline, started, guarded) VALUES (?,?,?,?)",
            (version, baseline, time.time() if now is None else now, int(guarded)),
        )
    logger.info(
        "%s %s against %s: the users' votes decide",
        "guarded canary" if guarded else "canary",
        version,
        baseline,
    )


@dataclass(frozen=True)
class ActiveCanary:
    version: str
    baseline: str
    started: float
    guarded: bool = False


class CanaryController:
    """Keeps the canary's state in the training store and decides between ingestion polls."""

    def __init__(
        self,
        settings: LearnerSettings,
        store: TrainingStore,
        emit: Callable[[EventBase], None],
        on_promoted: Callable[[str], None] = lambda version: None,
    ) -> None:
        self.s = settings
        self.rules = CanaryRules.from_settings(settings)
        self.store = store
        self.emit = emit
        self.on_promoted = on_promoted

    def active(self) -> ActiveCanary | None:
        with self.store.transaction() as cur:
            row = cur.execute(
                "SELECT version, baseline, started, guarded FROM canaries "
                "WHERE decided IS NULL ORDER BY started DESC LIMIT 1"
            ).fetchone()
        return ActiveCanary(row[0], row[1], row[2], bool(row[3])) if row else None

    def tick(self, now: float | None = None) -> Outcome | None:
        """Decide if the evidence allows; emit and record the decision. Raises if the event
        cannot be sent (the next tick tries again: the decision is re-derived, same id)."""
        canary = self.active()
        if canary is None:
            return None
        now = time.time() if now is None else now
        with self.store.transaction() as cur:
            ev = gather_evidence(cur, canary.version, canary.baseline)
        rules = self.rules.for_canary(canary.guarded)
        outcome, reason = decide(ev, now - canary.started, rules)
        low, high = ev.interval(rules.alpha)
        VOTES.set(ev.decisive)
        WIN_LOW.set(low)
        WIN_HIGH.set(high)
        if outcome is None:
            return None
        evidence = ev.as_event(rules.alpha)
        if canary.guarded:  # what the decision was held to, for whoever reads the event
            reason = f"guarded ({_rules_text(rules)}): {reason}"
            evidence |= {"guarded": 1, "rules": _rules_text(rules)}
        self.emit(self._event(canary, outcome, reason, evidence))
        if outcome == "promoted":
            self.on_promoted(canary.version)
        with self.store.transaction() as cur:
            cur.execute(
                "UPDATE canaries SET decided=?, outcome=?, evidence=? WHERE version=?",
                (now, outcome, json.dumps(evidence), canary.version),
            )
        DECISIONS.labels(outcome).inc()
        logger.info("canary %s %s: %s", canary.version, outcome.replace("_", " "), reason)
        return outcome

    def _event(
        self, canary: ActiveCanary, outcome: Outcome, reason: str, evidence: Evidence
    ) -> EventBase:
        event_id = hashlib.sha256(f"canary|{canary.version}|{outcome}".encode()).hexdigest()[:32]
        if outcome == "promoted":
            return AdapterPromoted(
                event_id=event_id,
                model_name=self.s.model_name,
                version=canary.version,
                previous_version=canary.baseline,
                evidence=evidence,
            )
        return AdapterRolledBack(
            event_id=event_id,
            model_name=self.s.model_name,
            from_version=canary.version,
            to_version=canary.baseline,
            reason=f"canary: {reason}",
            evidence=evidence,
        )


def _rules_text(rules: CanaryRules) -> str:
    return f"margin {rules.margin:g}, at most {rules.max_votes} decisive votes"
