"""The fault suite's training-text row (``loop.faults.training_text``) on the tiny model."""

from __future__ import annotations

from pathlib import Path

from loop.faults.training_text import training_text_rows


def test_the_fault_suite_probe_finds_no_forged_control_tokens(tmp_path: Path) -> None:
    [row] = training_text_rows(tmp_path)
    assert row.group == "input"
    assert row.passed, row.outcome
    assert "SFT/RM/PPO ids: 0 forged special ids" in row.outcome
