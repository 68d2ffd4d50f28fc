"""The judge preference scores answers with a real (tiny) causal LM: finite, cached, and its
outcome follows its utilities."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loop.judge import Judge


def test_judge_scores_are_finite_cached_and_order_the_outcome(tiny_model_dir: Path) -> None:
    judge = Judge(str(tiny_model_dir))
    answers = ["Four.", "I like turtles and the sea, " * 5]
    first = judge.utilities("What is 2+2?", answers)
    assert all(math.isfinite(u) for u in first) and first[0] != first[1]
    assert judge.utilities("What is 2+2?", answers) == first  # cached, not recomputed
    outcome = judge("What is 2+2?", answers)
    assert outcome.utilities == tuple(first)
    assert outcome.best() == (0 if first[0] > first[1] else 1)
    # Batching with left padding must not change a score.
    alone = Judge(str(tiny_model_dir)).utilities("What is 2+2?", answers[:1])
    assert alone == [pytest.approx(first[0], abs=1e-4)]
