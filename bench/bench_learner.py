"""Benchmark the learner's training loops on this machine's CPU (SmolLM2-135M by default).

Measures 1) reward-model training throughput (comparison pairs per second: a pair is two
sequences, forward + backward), and 2) one PPO iteration at ``--ppo-batch`` prompts x
``--new-tokens`` new tokens, split into rollout (sampling), scoring (reward model, policy and
reference log-probs, values) and update (PPO epochs over minibatches). Like nanoGPT's
``estimate_mfu``, it also reports the achieved model FLOP/s against a given peak (default:
179 GFLOP/s, the fp32 matmul peak measured on the project's 2-core CPU, docs/architecture.md).

The trainers run wherever ``learner.modeling.make_accelerator`` puts them: on CUDA when a GPU
is visible, else on the CPU; the results record which (``device``). On a GPU, pass that chip's
fp32 peak as ``--peak-gflops`` (PyTorch's default fp32 matmuls do not use TF32).

Usage: ``.venv/bin/python -m bench.bench_learner [--model-dir DIR] [--pairs 64] [--json OUT]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from learner.data import Comparison
from learner.modeling import encode_pair, load_tokenizer
from learner.ppo.config import PPOConfig
from learner.ppo.train import run_ppo
from learner.rm.config import RewardConfig
from learner.rm.train import train_reward_model
from schemas.events import ChatMessage

QUESTIONS = [
    "What is the capital of France?",
    "Give me a tip for learning to cook.",
    "Explain what a reward model is in one paragraph.",
    "How do I reverse a list in Python?",
    "Why is the sky blue?",
    "Write a haiku about autumn.",
    "What should I pack for a weekend hike?",
    "Summarise the plot of Romeo and Juliet.",
]
ANSWER_WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "helpful",
    "clear",
    "short",
    "because",
    "light",
    "water",
    "list",
    "python",
    "step",
    "first",
    "then",
    "finally",
    "example",
    "simple",
    "good",
    "better",
    "context",
    "useful",
    "detail",
    "reason",
]


def _answer(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(ANSWER_WORDS) for _ in range(words)).capitalize() + "."


def _comparisons(n: int, answer_words: int, seed: int = 0) -> list[Comparison]:
    rng = random.Random(seed)
    return [
        Comparison(
            pair_id=f"bench-{i}",
            prompt=(ChatMessage(role="user", content=rng.choice(QUESTIONS)),),
            chosen=_answer(rng, answer_words),
            rejected=_answer(rng, answer_words),
        )
        for i in range(n)
    ]


def _n_params(model_dir: Path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    # Non-embedding parameters of a Llama block stack (what the matmuls touch per token).
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h * config.num_key_value_heads // config.num_attention_heads
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i)


def bench_reward(model_dir: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    comparisons = _comparisons(args.pairs, args.answer_words)
    tokenizer = load_tokenizer(model_dir)
    tokens = sum(
        len(encode_pair(tokenizer, c.prompt, c.chosen, 512)[0])
        + len(encode_pair(tokenizer, c.prompt, c.rejected, 512)[0])
        for c in comparisons
    )
    config = RewardConfig(
        num_epochs=1, batch_size=args.rm_batch, eval_fraction=0.0, base_dtype=args.base_dtype
    )
    started = time.perf_counter()
    result = train_reward_model(model_dir, comparisons, config, out)
    wall = time.perf_counter() - started
    pairs_per_s = result.metrics["train_pairs_per_second"]
    seconds = args.pairs / pairs_per_s
    # LoRA training ~ 4 FLOPs per frozen parameter per token: forward 2 + activation gradients
    # 2; the frozen base needs no weight gradients (full fine-tuning would be 6).
    flops = 4 * _n_params(model_dir) * tokens
    return {
        "pairs": args.pairs,
        "batch_size": args.rm_batch,
        "tokens_per_pair": tokens / args.pairs,
        "train_seconds": seconds,
        "pairs_per_second": pairs_per_s,
        "wall_seconds_incl_load_and_eval": wall,
        "achieved_gflops": flops / seconds / 1e9,
        "fraction_of_peak": flops / seconds / 1e9 / args.peak_gflops,
    }


def bench_ppo(
    model_dir: Path, reward_dir: Path, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    rng = random.Random(1)
    prompts: list[tuple[ChatMessage, ...]] = [
        (ChatMessage(role="user", content=rng.choice(QUESTIONS)),) for _ in range(64)
    ]
    config = PPOConfig(
        num_steps=args.ppo_steps,
        batch_size=args.ppo_batch,
        max_new_tokens=args.new_tokens,
        mini_batch_size=args.mini_batch,
        ppo_epochs=args.ppo_epochs,
        base_dtype=args.base_dtype,
        rollout_engine=args.rollout_engine,
    )
    result = run_ppo(model_dir, reward_dir, prompts, config, out)
    steps = result.history
    keys = ["time/rollout", "time/scoring", "time/update", "time/step", "response/length"]
    per_step = [{k: round(s[k], 3) for k in keys} for s in steps]
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in keys}
    generated = mean["response/length"] * args.ppo_batch
    return {
        "config": {
            "batch_size": args.ppo_batch,
            "max_new_tokens": args.new_tokens,
            "mini_batch_size": args.mini_batch,
            "ppo_epochs": args.ppo_epochs,
            "base_dtype": args.base_dtype,
            "rollout_engine": args.rollout_engine,
        },
        "per_step": per_step,
        "mean": mean,
        "rollout_tokens_per_second": generated / mean["time/rollout"],
    }


@contextlib.contextmanager
def peak_cuda_memory(results: dict[str, Any], stage: str) -> Iterator[None]:
    """Record the stage's peak CUDA memory as torch's caching allocator counts it
    (``max_memory_allocated``) as ``results["cuda_peak_gib"][stage]``; nothing without CUDA.
    nvidia-smi's figure for the process is the one to compare with a GPU's size."""
    import torch

    if not torch.cuda.is_available():
        yield
        return
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    yield
    peaks = results.setdefault("cuda_peak_gib", {})
    peaks[stage] = torch.cuda.max_memory_allocated() / 2**30
    print(f"{stage}: peak CUDA memory {peaks[stage]:.2f} GiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="default: SmolLM2-135M")
    parser.add_argument("--pairs", type=int, default=64, help="reward-model training pairs")
    parser.add_argument("--rm-batch", type=int, default=8)
    parser.add_argument("--answer-words", type=int, default=40, help="words per synthetic answer")
    parser.add_argument("--ppo-batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--mini-batch", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--ppo-steps", type=int, default=2)
    parser.add_argument("--peak-gflops", type=float, default=179.0)
    parser.add_argument(
        "--base-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="the stages' base_dtype (LEARNER_BASE_DTYPE)",
    )
    parser.add_argument(
        "--rollout-engine",
        default="auto",
        choices=["auto", "decode_loop", "generate", "vllm"],
        help="PPO's rollout_engine (LEARNER_ROLLOUT_ENGINE)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    from common.logs import configure_logging

    configure_logging()
    if args.model_dir is None:
        from common.embedded_model import materialize_embedded_model

        args.model_dir = materialize_embedded_model()
    import torch

    cuda = torch.cuda.is_available()
    results: dict[str, Any] = {
        "model_dir": str(args.model_dir),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "peak_gflops": args.peak_gflops,
    }
    with tempfile.TemporaryDirectory() as tmp:
        with peak_cuda_memory(results, "reward_model"):
            results["reward_model"] = bench_reward(args.model_dir, args, Path(tmp) / "rm")
        print(json.dumps({"reward_model": results["reward_model"]}, indent=2), flush=True)
        reward_dir = Path(tmp) / "rm" / "adapter"
        with peak_cuda_memory(results, "ppo"):
            results["ppo"] = bench_ppo(args.model_dir, reward_dir, args, Path(tmp) / "ppo")
    print(json.dumps({"ppo": results["ppo"]}, indent=2))
    if cuda:
        results["cuda_max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
