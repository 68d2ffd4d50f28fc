"""Publishing gates: pure decisions on trainer/evaluator metrics.

A candidate is published only if every gate passes: the reward model ranks held-out
comparisons well enough to be worth optimising against, the policy improved the reward on held-out
prompts, it stayed within the KL budget of the reference (the penalty's purpose: Ziegler et al.
2019, "Fine-Tuning Language Models from Human Preferences"), and sanity prompts still get sane
answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

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
    accuracy: float | None, n: int, min_accuracy: float, confidence: float = 0.95
) -> GateDecision:
    """Held-out accuracy at least ``min_accuracy`` and, unless ``confidence`` is 0, better than
    chance at that confidence: the one-sided Wilson lower bound over the ``n`` held-out votes is
    above 0.5.

    Why a test and not a threshold alone: with 25-50 held-out noisy votes a threshold of 0.55
    passes a chance-level model about a third of the time and fails a perfect one about as
    often. The test passes a chance-level model 5 % of the time (at 0.95) whatever ``n`` is; its
    power grows with ``n`` (at a label ceiling of 0.7, about 0.8 with 50 held-out votes and 0.99
    with 100), so the learner holds out 20 % of the pairs.
    """
    if accuracy is None:
        return GateDecision("reward_accuracy", False, "reward model reported no accuracy")
    low = wilson_lower_bound(accuracy * n, n, confidence) if confidence > 0 else accuracy
    ok = accuracy >= min_accuracy and (confidence == 0 or low > 0.5)
    why = f"held-out accuracy {accuracy:.3f} on {n} votes (min {min_accuracy:.3f})"
    if confidence > 0:
        why += f", {confidence:.0%} lower bound {low:.3f} ({'>' if low > 0.5 else '<='} 0.5)"
    return GateDecision("reward_accuracy", ok, why)


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
