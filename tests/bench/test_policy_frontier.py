"""The frontier bench groups every answer of a prompt, from both sides of its pairs."""

from __future__ import annotations

from bench import policy_frontier
from bench.rm_sweep import Scored


def scored(prompt: str, ua: float, ub: float) -> Scored:
    return Scored(prompt, ("a", "b"), (ua, ub), both_cut=False)


def test_answers_of_one_prompt_are_pooled_and_small_prompts_dropped() -> None:
    rows = [scored("p", 0.0, 1.0), scored("q", 2.0, 2.0), scored("p", 3.0, 0.5)]
    groups = policy_frontier.answer_groups(rows, min_answers=3)
    assert groups == [[0.0, 1.0, 3.0, 0.5]]
    assert len(policy_frontier.answer_groups(rows, min_answers=2)) == 2
