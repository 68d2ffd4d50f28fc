"""Synthetic data for the ML tests on the tiny model."""

from __future__ import annotations

import random

from learner.data import Comparison, SFTExample
from schemas.events import ChatMessage

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
