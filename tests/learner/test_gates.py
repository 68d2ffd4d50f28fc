"""Gate decisions are pure functions of the metrics and the settings' thresholds."""

from __future__ import annotations

from prometheus_client import REGISTRY

from learner.gates import eval_gates, first_failure, reward_gate


def test_reward_gate_threshold_is_inclusive() -> None:
    assert reward_gate(0.55, 0.55).passed
    assert not reward_gate(0.549, 0.55).passed
    assert not reward_gate(None, 0.0).passed


def test_eval_gates_each_can_fail_alone() -> None:
    ok = eval_gates(0.1, 0.2, 0.5, [])
    assert [d.passed for d in ok] == [True, True, True]
    assert [d.passed for d in eval_gates(0.0, 0.2, 0.5, [])] == [False, True, True]
    assert [d.passed for d in eval_gates(0.1, 0.6, 0.5, [])] == [True, False, True]
    assert [d.passed for d in eval_gates(0.1, 0.2, 0.5, ["x"])] == [True, True, False]


def test_first_failure_counts_outcomes() -> None:
    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "rlhf_learner_gate_outcomes_total", {"gate": "kl_budget", "outcome": outcome}
        )
        return value or 0.0

    fails, passes = count("fail"), count("pass")
    failed = first_failure(eval_gates(0.1, 0.9, 0.5, []))
    assert failed is not None and failed.gate == "kl_budget"
    assert (count("fail"), count("pass")) == (fails + 1, passes)


def test_reward_gain_threshold_is_configurable() -> None:
    assert not eval_gates(0.05, 0.1, 0.5, [], min_gain=0.1)[0].passed
    assert eval_gates(-0.5, 0.1, 0.5, [], min_gain=-1.0)[0].passed
