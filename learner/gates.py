"""Publishing gates: pure decisions on trainer/evaluator metrics.

A candidate is published only if every gate passes: the reward model ranks held-out
comparisons well enough to be worth optimising against, the policy improved the reward on held-out
prompts, it stayed within the KL budget of the reference (the penalty's purpose: Ziegler et al.
2019, "Fine-Tuning Language Models from Human Preferences"), and sanity prompts still get sane
answers.

A reward model the held-out votes can neither certify nor contradict (``classify_reward_model``)
may go on to a guarded canary instead (``LEARNER_RM_GATE_UNCERTAIN``; learner.cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from common.stats import wilson_interval
from learner import metrics


@dataclass(frozen=True)
class GateDecision:
    gate: str
    passed: bool
    reason: str


def wilson_lower_bound(successes: float, n: int, confidence: float) -> float:
    """One-sided Wilson score lower bound of a binomial proportion (Wilson 1927)."""
    return wilson_interval(successes, n, NormalDist().inv_cdf(confidence))[0] if n > 0 else 0.0


def reward_gate(
    accuracy: float | None,
    n: int,
    min_accuracy: float,
    confidence: float = 0.95,
    signed_rank_z: float | None = None,
) -> GateDecision:
    """Held-out accuracy at least ``min_accuracy`` and, unless ``confidence`` is 0, better than
    chance at that confidence.

    The test: the Wilcoxon signed-rank statistic of the held-out margins (``signed_rank_z``,
    learner.rm.loss) above the one-sided normal quantile; trainers that do not report it fall
    back to the one-sided Wilson lower bound of the accuracy over the ``n`` votes being above
    0.5. Both pass a chance-level model 5 % of the time (at 0.95) whatever ``n`` is.

    Why a test and not a threshold alone: with 25-50 held-out noisy votes a threshold of 0.55
    passes a chance-level model about a third of the time and fails a perfect one about as
    often. Why the ranks: when most pairs are equal to the users (a tone most answers lack),
    most votes are coin flips; in a simulation of 100 held-out votes of which 40 % were
    informative (``bench/gate_power.py``), the accuracy test passed a reward model that was 0.82
    accurate on the informative pairs 48 % of the time and the signed-rank test 75 % (0.72
    accurate: 32 % vs 52 %), both 5 % for a chance-level model.
    """
    if accuracy is None:
        return GateDecision("reward_accuracy", False, "reward model reported no accuracy")
    why = f"held-out accuracy {accuracy:.3f} on {n} votes (min {min_accuracy:.3f})"
    if confidence == 0:
        return GateDecision("reward_accuracy", accuracy >= min_accuracy, why)
    if signed_rank_z is not None:
        critical = NormalDist().inv_cdf(confidence)
        beats_chance = signed_rank_z > critical
        why += (
            f", signed-rank z {signed_rank_z:.2f} {'>' if beats_chance else '<='} "
            f"{critical:.2f} ({confidence:.0%} one-sided)"
        )
    else:
        low = wilson_lower_bound(accuracy * n, n, confidence)
        beats_chance = low > 0.5
        why += f", {confidence:.0%} lower bound {low:.3f} ({'>' if beats_chance else '<='} 0.5)"
    return GateDecision("reward_accuracy", accuracy >= min_accuracy and beats_chance, why)


def reward_gate_on(
    metrics: dict[str, float], min_accuracy: float, confidence: float
) -> GateDecision:
    """:func:`reward_gate` on a reward trainer's held-out metrics."""
    return reward_gate(*_held_out(metrics), min_accuracy, confidence, metrics.get("signed_rank_z"))


RewardOutcome = Literal["certified", "uncertain", "contradicted"]


@dataclass(frozen=True)
class RewardVerdict:
    outcome: RewardOutcome
    reason: str


def classify_reward_model(
    accuracy: float | None,
    n: int,
    min_accuracy: float,
    confidence: float = 0.95,
    signed_rank_z: float | None = None,
) -> RewardVerdict:
    """What the held-out votes say of a reward model: **certified** (:func:`reward_gate`
    passes), **contradicted** (worse than chance at the same confidence, or no accuracy at all)
    or **uncertain** (neither).

    Why three outcomes and not pass/fail: the gate's power is low for the models a few hundred
    votes of subtle preferences make. docs/learning.md ("Power of the reward-model gate")
    simulates it: 100 held-out votes certify a 0.60-0.65 accurate `friendly` or `format` model
    only 17-30 % of the time, those need 600-1,600 held-out votes, and the demo's first cycles
    hold out 13 and 26. A rejection there says "not shown better", not "shown worse"; only the
    second is evidence against the model. Contradicted mirrors the certifying test: the
    signed-rank z below minus the one-sided quantile, or (Wilson fallback) the one-sided upper
    bound of the accuracy below 0.5. With ``confidence`` 0 there is no test, and the point
    threshold alone decides as before: nothing is uncertain.
    """
    decision = reward_gate(accuracy, n, min_accuracy, confidence, signed_rank_z)
    if decision.passed:
        return RewardVerdict("certified", decision.reason)
    if accuracy is None or confidence == 0:
        return RewardVerdict("contradicted", decision.reason)
    worse, why = _worse_than_chance(accuracy, n, confidence, signed_rank_z)
    outcome: RewardOutcome = "contradicted" if worse else "uncertain"
    return RewardVerdict(outcome, f"{decision.reason}; {why}")


def classify_reward_model_on(
    metrics: dict[str, float], min_accuracy: float, confidence: float
) -> RewardVerdict:
    """:func:`classify_reward_model` on a reward trainer's held-out metrics."""
    return classify_reward_model(
        *_held_out(metrics), min_accuracy, confidence, metrics.get("signed_rank_z")
    )


def leans_toward(metrics: dict[str, float]) -> bool:
    """Whether a reward model's held-out votes lean its way at all: the signed-rank z above 0
    (without ranks, the accuracy above 0.5).

    An uncertain model goes on to a guarded canary only if they do. Under chance the statistic
    is symmetric, so this halves the share of chance-level models that reach users that way
    (0.90 of them are uncertain at 13-100 held-out votes, ``bench/results/gate_verdicts.md``),
    while a model 0.65-0.70 right against the truth leans its way most of the time."""
    z = metrics.get("signed_rank_z")
    if z is not None:
        return z > 0
    accuracy = metrics.get("accuracy")
    return accuracy is not None and accuracy > 0.5


def _held_out(metrics: dict[str, float]) -> tuple[float | None, int]:
    return metrics.get("accuracy"), int(metrics.get("eval_count", 0.0))


def _worse_than_chance(
    accuracy: float, n: int, confidence: float, signed_rank_z: float | None
) -> tuple[bool, str]:
    """The certifying test turned around: (worse than chance at ``confidence``, why)."""
    critical = NormalDist().inv_cdf(confidence)
    if signed_rank_z is not None:
        worse = signed_rank_z < -critical
        return worse, (
            f"signed-rank z {signed_rank_z:.2f} {'<' if worse else '>='} {-critical:.2f}: "
            f"{'worse than chance' if worse else 'not worse than chance either'}"
        )
    high = wilson_interval(accuracy * n, n, critical)[1] if n > 0 else 1.0
    worse = high < 0.5
    return worse, (
        f"{confidence:.0%} upper bound {high:.3f} ({'<' if worse else '>='} 0.5): "
        f"{'worse than chance' if worse else 'not worse than chance either'}"
    )


def count_reward_verdict(gate: str, verdict: RewardVerdict) -> None:
    """Count it beside the other gates' pass/fail: uncertain under its own outcome."""
    outcome = {"certified": "pass", "contradicted": "fail"}.get(verdict.outcome, "uncertain")
    metrics.GATE_OUTCOMES.labels(gate, outcome).inc()


def eval_gates(
    reward_gain: float,
    kl: float,
    kl_budget: float,
    sanity_failures: Sequence[str],
    min_gain: float = 0.0,
) -> list[GateDecision]:
    gain_ok = reward_gain > min_gain
    return [
        GateDecision(
            "reward_gain",
            gain_ok,
            f"held-out reward gain {reward_gain:+.4f} ({'>' if gain_ok else '<='} {min_gain:g})",
        ),
        GateDecision(
            "kl_budget",
            kl <= kl_budget,
            f"mean KL {kl:.4f} {'<=' if kl <= kl_budget else '>'} budget {kl_budget:.4f}",
        ),
        GateDecision(
            "sanity",
            not sanity_failures,
            "sanity prompts ok"
            if not sanity_failures
            else "sanity failures: " + "; ".join(sanity_failures),
        ),
    ]


def first_failure(decisions: Sequence[GateDecision]) -> GateDecision | None:
    for decision in decisions:
        metrics.GATE_OUTCOMES.labels(decision.gate, "pass" if decision.passed else "fail").inc()
    return next((d for d in decisions if not d.passed), None)
