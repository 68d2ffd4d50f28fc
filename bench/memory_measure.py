"""The memory plan's check: peak RSS of one real reward-model training step on this CPU.

A random-weight model of Qwen2.5-0.5B-Instruct's published shape (bench/configs/) is written in
float32 by one process; a second process imports everything, notes its resident size, runs
``learner.rm.train.train_reward_model`` for one optimiser step (batch 2 comparisons of 256
tokens, the project's real reward-model code) and reports its peak RSS (``getrusage``). The
peak above the imports is compared with the plan's reward-model stage for the same shapes
(target: within 20 %). Separate processes, so that neither the model's construction nor the
parent's memory counts. Needs several GB and minutes: run it on a quiet machine.

    python -m bench.memory_plan --measure
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.memory_estimate import GIB, built_base_params, load_config
from bench.memory_stages import PlanOptions, plan
from learner.rm.config import RewardConfig

MEASURED_CONFIG = Path(__file__).parent / "configs" / "qwen2.5-0.5b-instruct"
BATCH, SEQ = 2, 256
TARGET = 0.20


def write_random_model(config_dir: Path, out: Path) -> None:
    """A float32 random-weight model of ``config_dir``'s shape, with the tiny test tokenizer
    (its ids are a subset of any vocabulary)."""
    import torch
    from transformers import AutoModelForCausalLM

    from devtools.tiny_model import build_tiny_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(load_config(config_dir), dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    build_tiny_tokenizer().save_pretrained(out)


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reward_step(model_dir: Path, out_dir: Path) -> dict[str, int]:
    """One reward-model optimiser step; resident bytes before loading and the peak."""
    import peft  # noqa: F401  (imported before the baseline: train_reward_model imports it)
    import transformers  # noqa: F401

    from learner.data import Comparison
    from learner.rm.train import train_reward_model
    from schemas.events import ChatMessage

    long = " ".join(["The quick brown fox jumps over the lazy dog."] * 60)  # > SEQ tokens
    comparisons = [
        Comparison(
            pair_id=f"p{i}",
            prompt=(ChatMessage(role="user", content=long),),
            chosen=long,
            rejected=long[::-1],
        )
        for i in range(BATCH)
    ]
    before = resident_bytes()
    train_reward_model(model_dir, comparisons, _config(), out_dir)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"baseline": before, "peak": peak}


def _config() -> RewardConfig:
    return RewardConfig(
        batch_size=BATCH,
        max_length=SEQ,
        eval_fraction=0.0,
        user_reliability=False,
        norm_sample=BATCH,
        device="cpu",
        base_dtype="float32",  # the plan it is checked against counts 4 bytes a weight
    )


def measure_report() -> str:
    with tempfile.TemporaryDirectory(prefix="memory-plan-") as tmp:
        model_dir = Path(tmp) / "model"
        _run("write", str(MEASURED_CONFIG), str(model_dir))
        result = json.loads(_run("step", str(model_dir), str(Path(tmp) / "out")).splitlines()[-1])
    config = load_config(MEASURED_CONFIG)
    options = PlanOptions(dtype_bytes=4, reward=_config())
    stage = next(
        p
        for p in plan(config, built_base_params(config), options)
        if p.stage == "reward model" and p.layout == "one base"
    )
    measured = result["peak"] - result["baseline"]
    error = measured / stage.total - 1
    verdict = "within" if abs(error) <= TARGET else "OUTSIDE"
    return "\n".join(
        [
            "## Check against a measured run (this CPU)",
            "",
            f"One reward-model step of a random-weight {MEASURED_CONFIG.name} in float32, batch "
            f"{BATCH} comparisons x {SEQ} tokens (bench/memory_measure.py):",
            "",
            "| plan | measured peak RSS above the imports | peak RSS | error |",
            "|---|---|---|---|",
            f"| {stage.total / GIB:.2f} GiB | {measured / GIB:.2f} GiB "
            f"| {result['peak'] / GIB:.2f} GiB | {error:+.0%} ({verdict} {TARGET:.0%}) |",
            "",
        ]
    )


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory_measure", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def main(argv: list[str]) -> int:
    if argv[0] == "write":
        write_random_model(Path(argv[1]), Path(argv[2]))
    elif argv[0] == "step":
        print(json.dumps(reward_step(Path(argv[1]), Path(argv[2]))))
    else:
        raise SystemExit(f"usage: {__doc__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
