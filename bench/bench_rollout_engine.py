"""PPO seconds per iteration with each rollout engine, alternating within one run on the real model.

One ``learner.ppo.train.run_ppo`` at the default PPO settings (``PPOConfig``: 8 prompts x 2
answers, up to 128 new tokens, temperature 1.0) on the shipped train prompts, whose rollouts
alternate between the engines iteration by iteration in ABBA order (generate, decode_loop,
decode_loop, generate, ...), so that a busy neighbour on a shared machine and the policy's drift
weigh on both alike; each pair of neighbouring iterations gives one ratio, and the median ratio
is the headline. The reward model is a fresh LoRA with a random head (``head_init="normal"``),
enough for PPO to update the policy (the timing does not depend on what the reward means). The
figures are PPO's own per-iteration timers (``time/rollout``, ``time/scoring``,
``time/update``). The answers' lengths differ between engines there (each samples its own), so
the rollout alone is also timed greedily, where both engines decode the very same tokens.

Usage::

    .venv/bin/python -m bench.bench_rollout_engine [--pairs 3] [--greedy-pairs 3] \
        [--engines generate,decode_loop] [--out bench/results/rollout_engine.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_all import command_line, machine
from common.embedded_model import resolve_model_dir
from learner.modeling import TrainOptions
from learner.ppo import train as ppo_train
from learner.ppo.config import PPOConfig
from learner.ppo.rollout_engines import (
    DecodeLoopEngine,
    RolloutEngine,
    RolloutRequest,
    make_engine,
)
from learner.rm.model import RewardModel
from loop.prompts import load_prompts
from schemas.events import ChatMessage

TIMERS = ("time/step", "time/rollout", "time/scoring", "time/update", "response/length")


UNFOLDED = "decode_loop_unfolded"  # the batch decoder through PEFT's LoRA layers (no fold)


def engine_named(name: str) -> RolloutEngine:
    """``make_engine``'s engines, and ``decode_loop_unfolded`` to time what folding buys."""
    return DecodeLoopEngine(fold=False) if name == UNFOLDED else make_engine(name)


class Alternating:
    """A rollout engine that hands each batch to the next engine of an ABBA schedule and
    remembers which one served which iteration."""

    name = "alternating"

    def __init__(self, names: list[str], pairs: int) -> None:
        self.engines = {name: engine_named(name) for name in names}
        first, second = names
        self.schedule = [
            name for p in range(pairs) for name in ((first, second) if p % 2 == 0 else names[::-1])
        ]
        self.served: list[str] = []

    def responses(
        self, peft_model: Any, prompt_rows: list[list[int]], request: RolloutRequest, pad_id: int
    ) -> list[list[int]]:
        name = self.schedule[len(self.served)]
        self.served.append(name)
        return self.engines[name].responses(peft_model, prompt_rows, request, pad_id)

    def close(self) -> None:
        return None


def _reward_adapter(model_dir: Path, out: Path) -> Path:
    model = RewardModel.create(model_dir, TrainOptions(), head_init="normal")
    model.save(out)
    return out


def _run(model_dir: Path, engine: Alternating, work: Path) -> list[dict[str, float]]:
    """One PPO run whose rollouts come from ``engine``; its per-iteration timers."""
    reward = _reward_adapter(model_dir, work / "reward")
    prompts: list[tuple[ChatMessage, ...]] = [
        (ChatMessage(role="user", content=q.prompt),) for q in load_prompts("train")
    ]

    def open_engine(*_: Any, **__: Any) -> RolloutEngine:
        return engine

    # The stage opens its engine by name; the bench swaps in the alternating one instead.
    ppo_train.open_rollout_engine = open_engine
    config = PPOConfig(num_steps=len(engine.schedule))
    result = ppo_train.run_ppo(model_dir, reward, prompts, config, work / "ppo")
    return [{key: row[key] for key in TIMERS} for row in result.history]


def _table(rows: list[dict[str, float]], served: list[str], names: list[str]) -> list[str]:
    lines = [
        "| engine | iterations | s / iteration | rollout s | rollout share | scoring s "
        "| update s | answer tokens (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        it = [row for row, by in zip(rows, served, strict=True) if by == name]

        def mean(key: str, it: list[dict[str, float]] = it) -> float:
            return statistics.fmean(r[key] for r in it)

        share = sum(r["time/rollout"] for r in it) / sum(r["time/step"] for r in it)
        lines.append(
            f"| {name} | {len(it)} | {mean('time/step'):.1f} | {mean('time/rollout'):.1f} "
            f"| {share:.0%} | {mean('time/scoring'):.1f} | {mean('time/update'):.1f} "
            f"| {mean('response/length'):.0f} |"
        )
    return lines


def _pairs(rows: list[dict[str, float]], served: list[str], names: list[str]) -> list[str]:
    """Per pair of neighbouring iterations: how many times faster the second engine was."""
    base, other = names
    lines = [
        f"| pair | {base} rollout s | {other} rollout s | rollout x | iteration x |",
        "|---|---|---|---|---|",
    ]
    rollout_x, step_x = [], []
    for p in range(0, len(rows) - 1, 2):
        pair = dict(zip(served[p : p + 2], rows[p : p + 2], strict=True))
        rollout_x.append(pair[base]["time/rollout"] / pair[other]["time/rollout"])
        step_x.append(pair[base]["time/step"] / pair[other]["time/step"])
        seconds = f"{pair[base]['time/rollout']:.1f} | {pair[other]['time/rollout']:.1f}"
        lines.append(f"| {p // 2 + 1} | {seconds} | {rollout_x[-1]:.2f} | {step_x[-1]:.2f} |")
    lines += [
        "",
        f"{other} against {base}, median over the pairs: rollout "
        f"**{statistics.median(rollout_x):.2f}x** as fast, whole iteration "
        f"**{statistics.median(step_x):.2f}x** as fast.",
    ]
    return lines


def _greedy_pairs(model_dir: Path, names: list[str], pairs: int) -> list[str]:
    """The rollout alone, greedy, so both engines decode the very same tokens: ``sample`` of the
    same 16 rows (8 train prompts x 2) on the base with a fresh LoRA, ABBA order."""
    import torch

    from learner.modeling import load_base_model, load_tokenizer, with_lora
    from learner.ppo.rollout import sample

    config = PPOConfig()
    tokenizer = load_tokenizer(model_dir)
    policy = with_lora(load_base_model(model_dir), config, None)
    train = [(ChatMessage(role="user", content=q.prompt),) for q in load_prompts("train")]
    batch = [p for p in train[: config.batch_size] for _ in range(config.samples_per_prompt)]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    answers: dict[str, torch.Tensor] = {}
    for p in range(pairs):
        for name in names if p % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            rollout = sample(
                policy,
                tokenizer,
                batch,
                config.max_prompt_length,
                config.max_new_tokens,
                1.0,
                1.0,
                greedy=True,
                engine=engine_named(name),
            )
            seconds[name].append(time.perf_counter() - started)
            answers[name] = rollout.input_ids
    base, other = names
    same = torch.equal(answers[base], answers[other])
    ratios = [a / b for a, b in zip(seconds[base], seconds[other], strict=True)]
    tokens = int((answers[other][:, -config.max_new_tokens :] != tokenizer.pad_token_id).sum())
    return [
        f"Rollout alone, greedy ({len(batch)} rows, up to {config.max_new_tokens} new tokens, "
        f"{'identical' if same else 'DIFFERENT'} tokens from both engines, about {tokens} "
        f"answer tokens): {base} "
        + ", ".join(f"{x:.1f}" for x in seconds[base])
        + f" s; {other} "
        + ", ".join(f"{x:.1f}" for x in seconds[other])
        + f" s; median pair ratio **{statistics.median(ratios):.2f}x**.",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--model-dir", default="embedded")
    p.add_argument("--pairs", type=int, default=3, help="pairs of iterations (one per engine)")
    p.add_argument(
        "--engines",
        default="generate,decode_loop",
        help=f"two engine names (make_engine's, or {UNFOLDED})",
    )
    p.add_argument(
        "--greedy-pairs", type=int, default=3, help="pairs of greedy rollouts alone (0: none)"
    )
    p.add_argument("--out", type=Path, default=None, help="append the report to this file")
    args = p.parse_args()
    model_dir = resolve_model_dir(args.model_dir)
    names = args.engines.split(",")
    if len(names) != 2:
        p.error("--engines takes two names")
    engine = Alternating(names, args.pairs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        rows = _run(model_dir, engine, Path(tmp))
    served = engine.served[: len(rows)]
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m "
        f"bench.bench_rollout_engine {command_line()}`; {(time.monotonic() - started) / 60:.0f} "
        "min.",
        f"Machine: {machine()}.",
        "",
        *_table(rows, served, names),
        "",
        *_pairs(rows, served, names),
    ]
    if args.greedy_pairs:
        lines += ["", *_greedy_pairs(model_dir, names, args.greedy_pairs)]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as sink:
            sink.write(text + "\n")


if __name__ == "__main__":
    main()
