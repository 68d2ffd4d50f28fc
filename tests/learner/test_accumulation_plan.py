"""Gradient accumulation plan shared by the trainers (learner.modeling): micro-batch loss scales,
where the optimiser steps, and the options' validation."""

from __future__ import annotations

import pytest

from learner.modeling import TrainOptions, accumulation_scales, mean_rows, optimizer_steps


def test_groups_of_steps_and_a_trailing_partial_group_that_still_steps() -> None:
    assert accumulation_scales(5, 2) == [
        (0.5, False),
        (0.5, True),
        (0.5, False),
        (0.5, True),
        (1.0, True),
    ]
    assert accumulation_scales(3, 1) == [(1.0, True)] * 3
    assert accumulation_scales(2, 4) == [(0.5, False), (0.5, True)]
    assert [optimizer_steps(n, 2) for n in (1, 2, 5)] == [1, 1, 3]


def test_accumulation_steps_must_be_at_least_one() -> None:
    assert TrainOptions().gradient_accumulation_steps == 1
    assert TrainOptions().gradient_checkpointing is False
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        TrainOptions(gradient_accumulation_steps=0)


def test_step_rows_average_only_the_micro_batches_that_report_a_key() -> None:
    rows = [{"loss": 1.0, "accuracy": 0.5}, {"rating_loss": 2.0}, {"loss": 3.0, "accuracy": 1.0}]
    assert mean_rows(rows) == {"accuracy": 0.75, "loss": 2.0, "rating_loss": 2.0}
