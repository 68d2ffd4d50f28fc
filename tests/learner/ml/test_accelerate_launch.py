"""The trainers run unchanged under ``accelerate launch`` with two CPU processes (gloo).

``accelerate launch --cpu`` always takes its single-process launcher, so the two processes come
from the torchrun launcher (``--multi_gpu``); without CUDA the trainers' Accelerator is created
with ``cpu=True`` and so runs MULTI_CPU over gloo.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.learner.ml.helpers import TWO_CPU_PROCESSES

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.e2e
def test_two_processes_train_one_model_and_save_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        *TWO_CPU_PROCESSES,
        str(Path(__file__).with_name("accelerate_script.py")),
        str(tiny_model_dir),
        str(tmp_path),
    ]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(
        r["world"] == 2 and r["distributed_type"] == "DistributedType.MULTI_CPU" for r in ranks
    )
    # Saved once, by the main process only.
    assert [r["reward_saved_by"] for r in ranks] == [[0], []]
    assert [r["ppo_saved_by"] for r in ranks] == [[0], []]
    assert (tmp_path / "reward" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "ppo" / "adapter" / "adapter_model.safetensors").is_file()
    # DDP kept the replicas identical: same trained weights on both ranks at evaluation.
    assert ranks[0]["reward_digest_at_eval"] == ranks[1]["reward_digest_at_eval"]
    assert ranks[0]["reward_digest_at_eval"] != hashlib.sha256(b"").hexdigest()
    # 24 training comparisons sharded over 2 ranks, batch 4, 2 epochs: 3 micro-batches per
    # epoch, accumulated 2 per optimiser step with the trailing one stepping alone: 2 steps.
    assert all(r["reward_steps"] == 4 for r in ranks)
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"]  # metrics gathered across ranks
    assert all(r["ppo_steps"] == 2 for r in ranks)
