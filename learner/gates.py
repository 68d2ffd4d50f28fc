"""Publishing gates (issue "Learner", part 5): pure decisions on trainer/evaluator metrics.

A candidate is published only if every gate passes: the reward model ranks held-out
comparisons well enough to be worth optimising against (InstructGPT reports ~72% held-out
accuracy for a 6B RM; the threshold is a setting), the policy improved the reward on held-out
prompts, it stayed within the KL budget of the reference (the penalty's purpose: Ziegler et al.
2019, "Fine-Tuning Language Models from Human Preferences"), and sanity prompts still get sane
answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from learner import metrics


@dataclass(frozen=True)
class GateDecision:
    gate: str
    passed: bool
    reason: str


def reward_gate(accuracy: float | None, min_accuracy: float) -> GateDecision:
    if accuracy is None:
        return GateDecision("reward_accuracy", False, "reward model reported no accuracy")
    ok = accuracy >= min_accuracy
    rel = ">=" if ok else "<"
    return GateDecision(
        "reward_accuracy", ok, f"held-out accuracy {accuracy:.3f} {rel} {min_accuracy:.3f}"
    )


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
