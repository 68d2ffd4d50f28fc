"""Synthetic data for the ML tests on the tiny model."""

from __future__ import annotations

import random
import sys

from learner.data import Comparison, SFTExample
from schemas.events import ChatMessage

# What every PPO step reports (learner/ppo/train.py), each a finite number.
PPO_STEP_METRICS = [
    "objective/kl",
    "objective/scores",
    "objective/rlhf_reward",
    "objective/non_score_reward",
    "objective/entropy",
    "policy/clipfrac",
    "policy/approxkl",
    "policy/entropy",
    "loss/policy",
    "loss/value",
    "loss/total",
    "val/ratio",
    "val/clipfrac",
    "time/rollout",
    "time/scoring",
    "time/update",
]

# `accelerate launch` with two CPU processes: `--cpu` always takes the single-process launcher,
# so the two processes come from the torchrun launcher (`--multi_gpu`); the trainers' Accelerator
# then runs MULTI_CPU over gloo.
TWO_CPU_PROCESSES = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",
]

PROMPTS = [
    "What is two plus two?",
    "Hello! How can I help you today?",
    "Answer briefly and politely.",
    "The quick brown fox?",
    "Say something nice.",
    "What is 2 + 2?",
]


def user(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage(role="user", content=text),)


def separable_comparisons(n_pairs: int, seed: int = 0) -> list[Comparison]:
    """Chosen answers say "four!" and rejected ones never do: linearly separable preferences."""
    rng = random.Random(seed)
    fillers = ["the lazy dog", "have a nice day", "sure here is", "brown fox", "thanks", "hello"]
    out = []
    for i in range(n_pairs):
        prompt = user(rng.choice(PROMPTS))
        base = rng.choice(fillers)
        out.append(
            Comparison(
                pair_id=f"pair-{i}",
                prompt=prompt,
                chosen=f"{base} four! four!",
                rejected=f"{base} {rng.choice(fillers)}",
            )
        )
    return out


def sft_examples() -> list[SFTExample]:
    return [SFTExample(prompt=user(p), completion="Two plus two is four.") for p in PROMPTS]
