"""Per-cycle report: a PNG plus the numbers, from the checkpoint's histories."""

from __future__ import annotations

from pathlib import Path

from learner.checkpoint import CycleCheckpoint
from learner.report import write_report
from tests.learner.factories import new_store


def test_report_png_and_json(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.record_cycle_start(1, 0)
    store.record_cycle_end(
        1,
        "published",
        "ok",
        "policy@v1",
        {"reward/accuracy": 0.7, "eval/kl": 0.1, "eval/reward_gain": 0.2},
    )
    ckpt = CycleCheckpoint(
        cycle_id=1,
        stage="done",
        snapshot={"max_seq": 0, "positions": []},
        version="policy@v1",
        outcome="published",
        reason="ok",
        history={
            "reward": [{"step": 1, "accuracy": 0.5, "loss": 0.7}],
            "ppo": [
                {"step": i, "objective/kl": 0.1 * i, "objective/scores": i} for i in range(1, 4)
            ],
        },
    )
    png = write_report(tmp_path, ckpt, store)
    assert png.name == "cycle-0001-policy-v1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert png.with_suffix(".json").exists()
