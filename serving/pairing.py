"""Pair assembly: which adapter versions answer a comparison, and in which order it is shown.

Without a canary, the K answers are K samples of the serving version (one engine request with
``n=K``, so a batching engine decodes them together). With a canary, the answers alternate
between the serving and the canary version (K=2: one each), which turns every vote into an A/B
comparison of the two versions. Canonical order (the order of ``pair.served.responses``) is
generation order; the order shown to the client is a uniformly random permutation recorded as
``shown_order`` (position bias is real in human comparisons, so no side is favoured).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from serving.engines.protocol import GenerationRequest


@dataclass(frozen=True)
class AnswerPlan:
    """The engine requests that answer one chat request and the order the answers are shown in:
    a pair (``plan_pair``) or the plain answers of an unpaired request."""

    # One engine request per distinct adapter version; canonical order is requests in order,
    # each contributing request.n answers.
    requests: list[GenerationRequest]
    # shown_order[i] = canonical index of the answer returned as choices[i].
    shown_order: list[int]

    @property
    def k(self) -> int:
        return sum(r.n for r in self.requests)

    def canonical_adapters(self) -> list[str]:
        return [r.adapter for r in self.requests for _ in range(r.n)]


def plan_pair(
    base: GenerationRequest,
    k: int,
    serving: str,
    canary: str | None,
    rng: random.Random | None = None,
) -> AnswerPlan:
    """Split K answers across the serving (and canary) version and draw the display order."""
    rng = rng or random.Random()
    if canary is None or canary == serving:
        requests = [replace(base, n=k, adapter=serving)]
    else:
        n_canary = k // 2
        requests = [
            replace(base, n=k - n_canary, adapter=serving),
            replace(base, n=n_canary, adapter=canary),
        ]
    shown_order = list(range(k))
    rng.shuffle(shown_order)
    return AnswerPlan(requests, shown_order)
