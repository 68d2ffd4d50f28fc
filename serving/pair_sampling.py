"""Informative pairing: ask for a comparison where the two answers differ, less where they do not.

A comparison costs the user attention, and a vote between two near-identical answers teaches
the reward model almost nothing (its Bradley-Terry likelihood is flat when the two rewards are
close; uncertainty sampling, Lewis & Gale 1994, "A sequential algorithm for training text
classifiers", asks for labels where they change the model most). Serving runs no reward model,
so it uses what it has after generating both answers: how different they are, by word-level
sequence similarity (``difflib``; a length change counts as difference, which matters for
preferences about length).

Sampled answers of one model all differ a lot in wording (SmolLM2's pairs at temperature 1:
0.80-0.97), so an absolute threshold would either show every pair or none. A pair is ranked
instead among the last ``window`` pairs of this replica, and shown with probability

    p = floor + (1 - floor) * rank        (rank in [0, 1]; the first pairs are always shown)

so ``floor`` also sets the share asked: 0.6 of the pairs at floor 0.2. Otherwise the client
gets the first answer alone (``pair_id`` null), logged as a plain answer. A canary pair (one
answer per version) is always shown: its votes decide the canary. Streamed pairs are always
shown too: their pair id goes out with the first chunk.

What it buys was measured on base-model pairs (``bench/rm_sweep.py pairing``,
``bench/results/pairing.md``): word difference is only weakly related to how much a vote says
about the users' taste, so at floor 0.2 the votes asked carry 3-7 % more signal each. Selecting
pairs by their answers does not bias the reward model: the Bradley-Terry model is conditional
on the pair shown, so which pairs are asked about changes only how much is learned.
"""

from __future__ import annotations

import bisect
import difflib
import random
from collections import deque
from collections.abc import Sequence


def answer_difference(texts: Sequence[str]) -> float:
    """1 - the smallest word-level similarity between the first answer and the others, in
    [0, 1]: 0 for identical answers, 1 for answers without a word in common."""
    first = texts[0].split()
    worst = 1.0
    for other in texts[1:]:
        worst = min(worst, difflib.SequenceMatcher(None, first, other.split()).ratio())
    return 1.0 - worst


def show_probability(rank: float, floor: float) -> float:
    """Chance of showing a pair whose difference ranks at ``rank`` among recent pairs."""
    return floor + (1.0 - floor) * rank


class RecentDifferences:
    """The answer differences of the last ``size`` pairs, kept sorted for ranking."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def rank(self, difference: float) -> float:
        """Share of recent pairs that differed less (ties count half); 1 with no history.
        Then remembers this pair."""
        n = len(self._sorted)
        if n == 0:
            rank = 1.0
        else:
            below = bisect.bisect_left(self._sorted, difference)
            ties = bisect.bisect_right(self._sorted, difference) - below
            rank = (below + 0.5 * ties) / n
        self._remember(difference)
        return rank

    def _remember(self, difference: float) -> None:
        self._order.append(difference)
        bisect.insort(self._sorted, difference)
        if len(self._order) > self.size:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]


# One generator for the process: seeding a new one per request would read the OS's entropy on
# every chat.
_RNG = random.Random()


def show_pair(
    texts: Sequence[str], floor: float, recent: RecentDifferences, rng: random.Random = _RNG
) -> bool:
    """Whether to show these answers as a comparison (always when ``floor`` is 1)."""
    if floor >= 1.0:
        return True
    rank = recent.rank(answer_difference(texts))
    return rng.random() < show_probability(rank, floor)
