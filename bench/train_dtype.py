"""Learner step time with the base in float32 and in bfloat16 on this machine.

Decides ``learner.precision.CPU_BF16_DEFAULT`` (what ``base_dtype=auto`` picks on a CPU with
native bf16). Each stage's step is timed in both dtypes on the real model, alternating in every
round (float32 first in even rounds, bfloat16 first in odd ones) so that a neighbour's load or
a thermal drift falls on both alike; the fastest and the median step are reported. Stages:

- ``reward``: one reward-model training step as ``learner.rm.train`` runs it (RewardConfig
  defaults: LoRA on the last 8 layers, mean+sum head), 8 comparisons = 16 rows, forward,
  pairwise loss, backward, AdamW step.
- ``ppo``: one PPO update micro-batch (PPOConfig defaults: LoRA on every layer, value head),
  8 rows of prompt + answer, forward, float32 log-probs, clipped policy + value loss, backward,
  AdamW step.
- ``rollout``: sampling 16 answers of ``--new-tokens`` tokens each (``generate`` with the KV
  cache, every row run to full length), the other half of a PPO iteration.

Usage::

    .venv/bin/python -m bench.train_dtype --rounds 3 --steps 2 --out var/train_dtype.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.bench_all import command_line, machine
from common.cpu_budget import configure_torch_threads
from common.cpu_features import cpu_has_native_bf16
from common.embedded_model import resolve_model_dir

DTYPES = ("float32", "bfloat16")
STAGES = ("reward", "ppo", "rollout")
Step = Callable[[], None]


def random_rows(rows: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab, (rows, length), generator=generator)  # (rows, length)


def reward_step(model_dir: Path, dtype: str, length: int) -> Step:
    from learner.rm.config import RewardConfig
    from learner.rm.loss import pairwise_loss
    from learner.rm.model import RewardModel

    config = RewardConfig(base_dtype=dtype, device="cpu")
    model = RewardModel.create(model_dir, config, head_init="normal", pooling=config.pooling)
    model.train()
    ids = random_rows(16, length, model.backbone.config.vocab_size, seed=1)  # (16, T)
    mask = torch.ones_like(ids)
    answer = mask.clone()
    answer[:, : length // 2] = 0  # the second half is the answer
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)

    def step() -> None:
        rewards = model(ids, mask, answer)  # (16,)
        loss = pairwise_loss(rewards[:8], rewards[8:], torch.ones(8))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def ppo_model(model_dir: Path, dtype: str) -> Any:
    from learner.modeling import ScalarHead, load_base_model, with_lora
    from learner.ppo.config import PPOConfig
    from learner.ppo.policy import PolicyWithValue
    from learner.precision import base_dtype_of

    config = PPOConfig(base_dtype=dtype, device="cpu")
    base = load_base_model(model_dir, base_dtype_of(config))
    head = ScalarHead(base.config.hidden_size, init="normal")
    return PolicyWithValue(with_lora(base, config, None), head)


def ppo_step(model_dir: Path, dtype: str, length: int) -> Step:
    from learner.ppo.losses import logprobs_of, policy_loss, value_loss

    model = ppo_model(model_dir, dtype).train()
    context = length // 3
    ids = random_rows(8, length, model.policy.config.vocab_size, seed=2)  # (8, T)
    mask = torch.ones_like(ids)
    answer_mask = torch.ones(8, length - context)  # (8, R)
    advantages = torch.randn(8, length - context, generator=torch.Generator().manual_seed(3))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-4)

    def step() -> None:
        logits, values = model(ids, mask, context)  # (8, R, V), (8, R)
        logprobs = logprobs_of(logits, ids[:, context:])  # (8, R)
        pg = policy_loss(logprobs, logprobs.detach() - 0.01, advantages, answer_mask, 0.2)
        vf, _ = value_loss(values, values.detach(), advantages, answer_mask, 0.2)
        (pg.loss + 0.1 * vf).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def rollout_step(model_dir: Path, dtype: str, length: int, new_tokens: int) -> Step:
    model = ppo_model(model_dir, dtype).policy.eval()
    prompt = random_rows(16, length // 3, model.config.vocab_size, seed=4)  # (16, P)

    @torch.no_grad()
    def step() -> None:
        model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            top_k=0,
            pad_token_id=0,
        )

    return step


def build_step(stage: str, model_dir: Path, dtype: str, args: argparse.Namespace) -> Step:
    if stage == "reward":
        return reward_step(model_dir, dtype, args.length)
    if stage == "ppo":
        return ppo_step(model_dir, dtype, args.length)
    return rollout_step(model_dir, dtype, args.length, args.new_tokens)


def time_alternating(steps: dict[str, Step], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Seconds per step of each dtype, the dtypes alternating in order round by round (one
    untimed warm-up step each first: allocator, oneDNN kernel selection)."""
    for step in steps.values():
        step()
    seconds: dict[str, list[float]] = {dtype: [] for dtype in steps}
    for round_index in range(rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for dtype in order:
            for _ in range(per_round):
                start = time.perf_counter()
                steps[dtype]()
                seconds[dtype].append(time.perf_counter() - start)
    return seconds


def measure_stage(stage: str, model_dir: Path, args: argparse.Namespace) -> list[str]:
    """Table rows of one stage: each dtype's fastest and median step, and the float32 /
    bfloat16 ratios of both.

    The fastest step is the figure to compare on a shared machine: as Python's timeit notes
    (https://docs.python.org/3/library/timeit.html#timeit.Timer.repeat), slower repeats are
    mostly other processes interfering, not the code; the medians show how much that was.
    """
    torch.manual_seed(0)
    steps = {dtype: build_step(stage, model_dir, dtype, args) for dtype in DTYPES}
    seconds = time_alternating(steps, args.rounds, args.steps)
    fastest = {dtype: min(values) for dtype, values in seconds.items()}
    medians = {dtype: statistics.median(values) for dtype, values in seconds.items()}
    rows = [
        f"| {stage} | {dtype} | {fastest[dtype]:.2f} | {medians[dtype]:.2f} "
        f"| {max(values):.2f} | {len(values)} |"
        for dtype, values in seconds.items()
    ]
    best = fastest["float32"] / fastest["bfloat16"]
    typical = medians["float32"] / medians["bfloat16"]
    rows.append(f"| {stage} | float32 / bfloat16 | {best:.2f}x | {typical:.2f}x | | |")
    print("\n".join(rows), flush=True)
    return rows


def report(rows: list[str], args: argparse.Namespace, started: datetime, minutes: float) -> str:
    header = [
        "# Learner steps: base in float32 vs bfloat16",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC by `.venv/bin/python -m bench.train_dtype "
        f"{command_line()}` in {minutes:.1f} min.",
        f"Machine: {machine()}; native bf16 (AVX-512 BF16 or AMX): {cpu_has_native_bf16()}; "
        f"torch threads {torch.get_num_threads()}.",
        f"Sequence length {args.length} tokens; {args.rounds} rounds x {args.steps} steps per "
        f"dtype, alternating; rollout: 16 rows x {args.new_tokens} new tokens.",
        "",
        "| stage | base dtype | fastest s/step | median s/step | slowest | steps |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="embedded")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated: " + ", ".join(STAGES)
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per dtype per round")
    parser.add_argument("--length", type=int, default=192, help="prompt + answer tokens per row")
    parser.add_argument("--new-tokens", type=int, default=32, help="rollout: tokens per answer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch_threads(0)
    model_dir = resolve_model_dir(args.model_dir)
    started = datetime.now(UTC)
    rows: list[str] = []
    for stage in args.stages.split(","):
        rows += measure_stage(stage, model_dir, args)
    text = report(rows, args, started, (datetime.now(UTC) - started).total_seconds() / 60)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
