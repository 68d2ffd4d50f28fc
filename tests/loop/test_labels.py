"""Label ceiling and accuracy against the noise-free ordering, by hand and by simulation."""

from __future__ import annotations

import math
import random

import pytest

from loop.labels import label_ceiling, truth_accuracy, vote_agreement
from loop.preferences import plackett_luce


def test_label_ceiling_by_hand() -> None:
    pairs = [(1.0, 0.0), (0.0, 2.0), (3.0, 3.0)]  # the tie has no ordering and is left out
    ceiling = label_ceiling(pairs, temperature=1.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert ceiling.n == 2
    assert ceiling.value == pytest.approx((sig(1.0) + sig(2.0)) / 2)
    assert label_ceiling(pairs, temperature=0.0).value == 1.0


def test_label_ceiling_is_what_noisy_votes_agree_with_the_truth() -> None:
    rng = random.Random(0)
    pairs = [(rng.gauss(0, 1), rng.gauss(0, 1)) for _ in range(4000)]
    votes = [plackett_luce(p, 1.0, rng)[0] for p in pairs]
    agree = sum((v == 0) == (a > b) for v, (a, b) in zip(votes, pairs, strict=True)) / len(pairs)
    assert agree == pytest.approx(label_ceiling(pairs, 1.0).value, abs=0.02)


def test_truth_accuracy_counts_ties_half_and_skips_equal_utilities() -> None:
    utilities = [(1.0, 0.0), (0.0, 1.0), (2.0, 1.0), (5.0, 5.0)]
    scores = [(0.3, 0.1), (0.3, 0.1), (0.2, 0.2), (9.0, 0.0)]
    acc = truth_accuracy(scores, utilities)
    assert acc.n == 3
    assert acc.value == pytest.approx((1 + 0 + 0.5) / 3)
    assert acc.low < acc.value < acc.high
    with pytest.raises(ValueError):
        truth_accuracy(scores[:2], utilities)


def test_vote_agreement_by_hand() -> None:
    votes = [((1.0, 0.0), 0), ((1.0, 0.0), 1), ((0.0, 2.0), None), ((3.0, 3.0), 0)]
    agreement = vote_agreement(votes)
    assert agreement.n == 3
    assert agreement.value == pytest.approx((1 + 0 + 0.5) / 3)
