"""learner.trainers.launched: the launch command of LEARNER_DISTRIBUTED=fsdp and the accelerate
config file it passes."""

from __future__ import annotations

import sys

import pytest
import yaml

from learner.trainers.launched import FSDP_CONFIG, fsdp_launcher_problem, launcher_for

pytestmark = pytest.mark.unit


def test_fsdp_config_follows_accelerate_launch_in_both_spellings() -> None:
    config = ["--config_file", str(FSDP_CONFIG)]
    assert launcher_for("accelerate launch --num_processes=4", "fsdp") == [
        "accelerate",
        "launch",
        *config,
        "--num_processes=4",
    ]
    assert launcher_for("python -m accelerate.commands.launch --num_processes 2", "fsdp") == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *config,
        "--num_processes",
        "2",
    ]
    assert launcher_for("/opt/venv/bin/accelerate launch", "fsdp")[2:4] == config


def test_ddp_keeps_the_launcher_as_set() -> None:
    value = "accelerate launch --multi_gpu --num_processes=4"
    assert launcher_for(value, "ddp") == value.split()


@pytest.mark.parametrize(
    ("launcher", "problem"),
    [
        ("", "LEARNER_TRAIN_LAUNCHER to one"),
        ("torchrun --nproc_per_node 4", "LEARNER_TRAIN_LAUNCHER to one"),
        ("accelerate launch --multi_gpu --num_processes 4", "--multi_gpu"),
        ("accelerate launch --config_file=mine.yaml", "--config_file"),
        ("accelerate launch --use_deepspeed", "--use_deepspeed"),
    ],
)
def test_fsdp_refuses_a_launcher_that_would_not_shard(launcher: str, problem: str) -> None:
    assert problem in (fsdp_launcher_problem(launcher) or "")
    with pytest.raises(ValueError, match="LEARNER_DISTRIBUTED=fsdp"):
        launcher_for(launcher, "fsdp")


def test_fsdp_config_shards_the_base_as_the_stages_expect() -> None:
    """What learner.sharding relies on: FSDP1, original parameters kept, rank 0's weights
    synced, FULL_SHARD; and a file accelerate itself reads as an FSDP launch."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    raw = yaml.safe_load(FSDP_CONFIG.read_text())
    fsdp = raw["fsdp_config"]
    assert raw["distributed_type"] == "FSDP" and raw["mixed_precision"] == "bf16"
    assert fsdp["fsdp_version"] == 1 and fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_use_orig_params"] is True and fsdp["fsdp_sync_module_states"] is True
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is False
    assert "num_processes" not in raw  # the launcher names it
    assert load_config_from_file(str(FSDP_CONFIG)).distributed_type == DistributedType.FSDP
