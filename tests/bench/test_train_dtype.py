"""bench.train_dtype on the tiny model: every stage is timed in both dtypes, alternating, and
the report holds the fastest and median ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.train_dtype import Step, main, time_alternating

pytestmark = pytest.mark.unit


def test_dtypes_alternate_round_by_round() -> None:
    calls: list[str] = []

    def step(name: str) -> Step:
        return lambda: calls.append(name)

    steps = {name: step(name) for name in ("float32", "bfloat16")}
    seconds = time_alternating(steps, rounds=2, per_round=2)
    warm_up = ["float32", "bfloat16"]
    assert calls == warm_up + ["float32"] * 2 + ["bfloat16"] * 4 + ["float32"] * 2
    assert {name: len(values) for name, values in seconds.items()} == {
        "float32": 4,
        "bfloat16": 4,
    }


def test_report_has_both_dtypes_and_the_ratio_of_every_stage(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train_dtype.md"
    args = ["--model-dir", str(tiny_model_dir), "--rounds", "1", "--steps", "1"]
    assert main([*args, "--length", "12", "--new-tokens", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Learner steps: base in float32 vs bfloat16\n\nRun ")
    for stage in ("reward", "ppo", "rollout"):
        for dtype in ("float32", "bfloat16", "float32 / bfloat16"):
            assert f"| {stage} | {dtype} |" in text
