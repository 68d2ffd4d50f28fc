"""The reward-model, PPO and SFT stages sharded with FSDP over two CPU processes (gloo) train
the same model as one process on the same data, and each rank holds half of the frozen base.

The launch is the one ``LEARNER_DISTRIBUTED=fsdp`` makes: ``accelerate launch --config_file``
the learner's fsdp.yaml (``--mixed_precision no`` on CPU). accelerate enables FSDP for GPU
launches only; ``learner.sharding.make_accelerator`` turns the same FSDP path on for CPU
processes, so this runs the stages' code as a GPU launch would, less bf16. fsdp_script.py says
how both runs see the same global batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from learner.trainers.launched import FSDP_CONFIG

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("fsdp_script.py")
# float32 on both sides; the two runs differ only in how sums are split and ordered (two ranks'
# halves, gradients averaged by reduce-scatter): measured differences are at most 2e-6 on the
# saved weights and on every logged number (1.5e-5 relative), 5x inside this tolerance.
RTOL, ATOL = 1e-4, 1e-5
SAVED = [
    "reward/adapter/adapter_model.safetensors",
    "reward/adapter/score_head.safetensors",
    "ppo/adapter/adapter_model.safetensors",
    "ppo/value_head.safetensors",
    "sft/adapter/adapter_model.safetensors",
]


def _run(
    command: list[str], out: Path, extra_env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]


def _two_process_launch(script_and_args: list[str]) -> list[str]:
    """The launch ``LEARNER_DISTRIBUTED=fsdp`` makes, on 2 CPU processes (no bf16 autocast)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(FSDP_CONFIG),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        "0",
        *script_and_args,
    ]


def _assert_rows_close(one: list[dict[str, float]], sharded: list[dict[str, float]]) -> None:
    assert len(one) == len(sharded)
    for a, b in zip(one, sharded, strict=True):
        keys = sorted(k for k in a if not k.startswith("time/"))
        assert keys == sorted(k for k in b if not k.startswith("time/"))
        expected = torch.tensor([a[k] for k in keys], dtype=torch.float64)
        actual = torch.tensor([b[k] for k in keys], dtype=torch.float64)
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=str(keys))


@pytest.mark.e2e
def test_fsdp_on_two_processes_trains_what_one_process_trains(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    args = [str(SCRIPT), str(tiny_model_dir)]
    (one,) = _run([sys.executable, *args, str(tmp_path / "one")], tmp_path / "one")
    sharded = _run(_two_process_launch([*args, str(tmp_path / "two")]), tmp_path / "two")
    assert [r["world"] for r in sharded] == [2, 2]
    assert {r["distributed_type"] for r in sharded} == {"DistributedType.FSDP"}
    # Sharded: each rank holds half of the frozen base (FULL_SHARD splits every unit's flat
    # parameter evenly; padding, which is no parameter's, makes a unit's halves differ by one).
    for stage in ("reward", "ppo", "sft"):
        whole = one["frozen_numel"][stage]
        held = [r["frozen_numel"][stage] for r in sharded]
        assert sum(held) == whole
        assert all(abs(n - whole / 2) <= 0.01 * whole for n in held), (whole, held)
    # 3 reward steps (2 of comparisons, 1 of ratings), 2 PPO iterations and 2 SFT steps, with
    # the same numbers.
    assert [len(one[f"{s}_history"]) for s in ("reward", "ppo", "sft")] == [3, 2, 2]
    for rank in sharded:
        for stage in ("reward", "ppo", "sft"):
            _assert_rows_close(one[f"{stage}_history"], rank[f"{stage}_history"])
    assert any("rating_loss" in row for row in one["reward_history"])
    # The saved adapters and heads (gathered from the shards) are the one process's.
    for name in SAVED:
        expected, actual = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert expected.keys() == actual.keys() and expected, name
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=RTOL, atol=ATOL)
    # PPO moved the policy (LoRA B starts at zero), so the comparison is not of two inits.
    policy = load_file(tmp_path / "one" / "ppo" / "adapter" / "adapter_model.safetensors")
    assert max(v.abs().max().item() for k, v in policy.items() if "lora_B" in k) > 1e-4


@pytest.mark.e2e
def test_fsdp_shards_a_bfloat16_base_beside_float32_adapters(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A bf16 base with float32 LoRA, heads and PPO's frozen reward adapter on it: FSDP1 needs
    one dtype per unit, so the launch fails unless every float32 leaf is a unit of its own."""
    command = _two_process_launch([str(SCRIPT), str(tiny_model_dir), str(tmp_path / "two")])
    ranks = _run(command, tmp_path / "two", {"FSDP_BASE_DTYPE": "bfloat16"})
    assert len(ranks) == 2
    for name in SAVED:
        saved = load_file(str(tmp_path / "two" / name))
        assert saved and all(t.dtype == torch.float32 for t in saved.values()), name
