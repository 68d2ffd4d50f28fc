"""Memory plan of the learner's stages for real models, without weights or a GPU.

Builds each stage's model on the meta device from a model config (the published ones of
Qwen2.5-1.5B-Instruct and Llama-3.1-8B-Instruct in bench/configs/, or ``--config DIR``) and
prints, per stage (SFT, reward model, PPO, evaluation), layout (one shared base, as the
learner builds, and a base per model for comparison) and GPU, the bytes of base weights, LoRA
and heads, gradients, Adam states and activations at the stage configs' default batch and
lengths (bench/memory_stages.py; the formulas and their reference in bench/memory_estimate.py).
``--measure`` checks the plan against a measured reward-model step on this CPU
(bench/memory_measure.py).

    python -m bench.memory_plan                      # -> bench/results/memory_plan.md
    python -m bench.memory_plan --dtype float32 --config DIR --out /tmp/plan.md
    python -m bench.memory_plan --measure            # several GB and minutes: a quiet machine
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.memory_estimate import DTYPE_BYTES, GIB, built_base_params, load_config
from bench.memory_stages import PlanOptions, StagePlan, plan

CONFIGS = Path(__file__).parent / "configs"
PUBLISHED = ("qwen2.5-1.5b-instruct", "llama-3.1-8b-instruct")
DEFAULT_OUT = Path(__file__).parent / "results" / "memory_plan.md"
# The GPUs of k8s/components/learner-multigpu (and learner-fsdp on top of it).
DEFAULT_GPUS = 4


def gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def model_table(name: str, base: int, rows: list[StagePlan], gpus: int) -> list[str]:
    lines = [
        f"### {name} ({base / 1e9:.2f} B parameters)",
        "",
        "| stage | layout | bases | base weights | LoRA + heads | gradients | Adam states "
        f"| activations (largest phase) | per GPU, 1 GPU or DDP | per GPU, FSDP over {gpus} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.stage} | {r.layout} | {r.bases} | {gib(r.weights)} | {gib(r.lora)} "
            f"| {gib(r.gradients)} | {gib(r.optimiser)} "
            f"| {gib(r.activations)} ({r.phase}, {r.shapes}) | **{gib(r.total)}** "
            f"| {gib(r.sharded(gpus))} |"
        )
    shared = max(r.total for r in rows if r.layout == "one base")
    separate = max(r.total for r in rows if r.layout == "base per model")
    lines += [
        "",
        f"Largest stage per GPU: {gib(shared)} GiB with one base (the learner), "
        f"{gib(separate)} GiB with a base per model.",
        "",
    ]
    return lines


def render(
    models: Sequence[tuple[str, int, list[StagePlan]]],
    dtype: str,
    options: PlanOptions,
    gpus: int,
    command: str,
) -> str:
    lines = [
        "# Learner memory plan",
        "",
        f"`{command}` (meta device: no weights, no GPU). GiB per process (every learner batch",
        "size is per process, so per GPU under DDP). Under FSDP (`LEARNER_DISTRIBUTED=fsdp`,",
        "learner/sharding.py) the prepared model's weights, LoRA, gradients and Adam states are",
        "divided among the GPUs; each GPU still holds PPO's frozen reward model whole (the",
        "second base of `today`), and the units it computes with whole: the root (embeddings,",
        "final norm, LM head) and two decoder layers. Evaluation runs in the daemon (one",
        f"process): its FSDP column is its total. Base weights in {dtype}; LoRA, heads, "
        "gradients and Adam states in",
        "float32 (two moments, no master copy). Activations at the stage configs' default",
        "batch and lengths, the largest phase of the stage, "
        f"{'with' if options.checkpointing else 'without'} gradient checkpointing, "
        f"{options.attention} attention (bench/memory_estimate.py: Korthikanti et al. 2022),",
        "plus logits and their float32 log-softmax where a loss needs them, or the KV cache",
        "when sampling. Not counted: the CUDA context and allocator slack (about 1-2 GiB per",
        "GPU), and the host copy a load makes before the weights move to the GPU.",
        "",
        "Layouts: `one base` = the learner: policy, reference (adapters off) and reward model",
        "as PEFT adapters on one frozen base per process (TRL's multi-adapter layout);",
        "`base per model` = for comparison, PPO and evaluation loading the policy's base and the",
        "reward model's base separately.",
        "",
    ]
    for name, base, rows in models:
        lines += model_table(name, base, rows, gpus)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        help="a model directory holding config.json (repeatable); default: the published "
        "Qwen2.5-1.5B-Instruct and Llama-3.1-8B-Instruct configs in bench/configs/",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPE_BYTES),
        default="bfloat16",
        help="base weights and activations: bfloat16 where the device has it (CUDA, CPUs with "
        "native bf16), else float32: what the learner's base_dtype=auto picks",
    )
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument(
        "--attention",
        choices=("eager", "sdpa"),
        default="eager",
        help="eager keeps the attention scores for backward (Korthikanti's 5*a*s term); sdpa "
        "(memory-efficient kernels) keeps none",
    )
    parser.add_argument("--gpus", type=int, default=DEFAULT_GPUS, help="GPUs FSDP shards over")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown output")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="also measure one reward-model step of a random-weight Qwen2.5-0.5B on this CPU "
        "(float32) and compare its peak RSS with the plan (needs several GB)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = PlanOptions(
        dtype_bytes=DTYPE_BYTES[args.dtype],
        checkpointing=args.checkpointing,
        attention=args.attention,
    )
    dirs = args.config or [CONFIGS / name for name in PUBLISHED]
    models = []
    for path in dirs:
        config = load_config(path)
        base = built_base_params(config)
        models.append((path.name, base, plan(config, base, options)))
    command = "python -m bench.memory_plan " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    text = render(models, args.dtype, options, args.gpus, command.strip())
    if args.measure:
        from bench.memory_measure import measure_report

        text += "\n" + measure_report()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
