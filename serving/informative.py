"""Informative pairing: ask for a comparison where the two answers differ, less where they do not.

A comparison costs the user attention, and a vote between two near-identical answers teaches
the reward model almost nothing (its Bradley-Terry likelihood is flat when the two rewards are
close; uncertainty sampling, Lewis & Gale 1994, "A sequential algorithm for training text
classifiers", asks for labels where they change the model most). Serving runs no reward model,
so it uses what it has after generating both answers: how different they are, by word-level
sequence similarity (``difflib``; a length change counts as difference, which matters for
preferences about length). The pair is shown with probability

    p = floor + (1 - floor) * min(1, difference / full_at)

and otherwise the client gets the first answer alone (``pair_id`` null), logged as a plain
answer. A canary pair (one answer per version) is always shown: its votes decide the canary.
Streamed pairs are always shown too: their pair id goes out with the first chunk.

Selecting pairs by their answers does not bias the reward model: the Bradley-Terry model is
conditional on the pair shown, so which pairs are asked about changes only how much is learned.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence


def answer_difference(texts: Sequence[str]) -> float:
    """1 - the smallest word-level similarity between the first answer and the others, in
    [0, 1]: 0 for identical answers, 1 for answers without a word in common."""
    first = texts[0].split()
    worst = 1.0
    for other in texts[1:]:
        worst = min(worst, difflib.SequenceMatcher(None, first, other.split()).ratio())
    return 1.0 - worst


def show_probability(difference: float, floor: float, full_at: float) -> float:
    """Chance of showing a pair whose answers differ by ``difference`` (module doc)."""
    if full_at <= 0:
        return 1.0
    return floor + (1.0 - floor) * min(1.0, difference / full_at)


def show_pair(texts: Sequence[str], floor: float, full_at: float, rng: random.Random) -> bool:
    """Whether to show these answers as a comparison (always when ``floor`` is 1)."""
    if floor >= 1.0:
        return True
    return rng.random() < show_probability(answer_difference(texts), floor, full_at)
