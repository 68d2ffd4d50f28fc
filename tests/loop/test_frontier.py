"""Best-of-n frontier maths (loop.frontier): exact oracle, KL bound, noise calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loop.frontier import (
    best_of_n_kl_bound,
    frontier,
    noise_for_accuracy,
    noisy_best_of_n_win_rate,
    oracle_win_rate,
    truth_accuracy_of_noise,
)


def test_kl_bound_is_zero_for_one_sample_and_grows_like_log_n() -> None:
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError):
        best_of_n_kl_bound(0)


def test_oracle_matches_hand_computation_on_two_values() -> None:
    # best of 2 from {0, 1}: picks 1 w.p. 3/4 (wins 1/2 + ties 1/4), 0 w.p. 1/4 (ties 1/2)
    expected = 0.75 * (0.5 + 0.25) + 0.25 * (0.5 * 0.5)
    assert oracle_win_rate([0.0, 1.0], 2) == pytest.approx(expected)


def test_oracle_is_a_coin_flip_for_one_draw_or_equal_answers() -> None:
    assert oracle_win_rate([0.3, 1.0, 2.0, 2.0], 1) == pytest.approx(0.5)
    assert oracle_win_rate([1.0, 1.0, 1.0], 16) == pytest.approx(0.5)


def test_oracle_rises_with_n_toward_beating_all_but_the_best() -> None:
    u = [0.0, 1.0, 2.0, 3.0]
    rates = [oracle_win_rate(u, n) for n in (1, 2, 4, 64)]
    assert rates == sorted(rates)
    assert rates[-1] == pytest.approx(0.75 + 0.5 * 0.25, abs=1e-3)  # always the best answer


def test_truth_accuracy_falls_from_one_to_a_half_with_noise() -> None:
    groups = [[0.0, 1.0, 1.0, 3.0], [2.0, 0.5]]
    assert truth_accuracy_of_noise(groups, 0.0) == 1.0
    assert truth_accuracy_of_noise(groups, 1e6) == pytest.approx(0.5, abs=1e-3)
    # one pair with gap 1: Phi(1 / (sigma sqrt 2)) at sigma = 1 / sqrt 2 is Phi(1)
    assert truth_accuracy_of_noise([[0.0, 1.0]], 1 / math.sqrt(2)) == pytest.approx(0.8413, 1e-3)
    with pytest.raises(ValueError):
        truth_accuracy_of_noise([[1.0, 1.0]], 1.0)


def test_noise_for_accuracy_inverts_truth_accuracy() -> None:
    groups = [[0.0, 1.0, 1.0, 3.0], [2.0, 0.5, 0.7]]
    for target in (0.6, 0.75, 0.9):
        sigma = noise_for_accuracy(groups, target)
        assert truth_accuracy_of_noise(groups, sigma) == pytest.approx(target, abs=1e-6)
    assert noise_for_accuracy(groups, 1.0) == 0.0
    with pytest.raises(ValueError):
        noise_for_accuracy(groups, 0.5)


def test_noisy_best_of_n_tends_to_the_oracle_and_to_chance() -> None:
    u = [0.0, 0.0, 1.0, 2.0, 2.5]
    rng = np.random.default_rng(1)
    clean = noisy_best_of_n_win_rate(u, 4, 1e-9, 20000, rng)
    assert clean == pytest.approx(oracle_win_rate(u, 4), abs=0.01)
    blind = noisy_best_of_n_win_rate(u, 4, 1e6, 20000, rng)
    assert blind == pytest.approx(0.5, abs=0.01)


def test_frontier_orders_scorers_by_accuracy() -> None:
    groups = [[0.0, 0.5, 1.0, 1.5, 3.0, 0.0], [0.0, 2.0, 2.0, 1.0]]
    [oracle] = frontier(groups, [8], None)
    [good] = frontier(groups, [8], 0.9, trials=4000)
    [weak] = frontier(groups, [8], 0.6, trials=4000)
    assert oracle > good > weak > 0.5
