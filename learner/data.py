"""In-memory training examples handed from the training store to the trainers.

The store (``learner.store``) produces these after joining feedback to served content; the
trainers (``learner.rm``, ``learner.ppo``, ``learner.sft``) consume them.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import ChatMessage

# A logged prompt: the conversation up to the answer (PPO and the evaluation sample from these).
Prompt = tuple[ChatMessage, ...]


@dataclass(frozen=True)
class Comparison:
    """One pairwise preference: ``chosen`` was preferred to ``rejected`` for ``prompt``.

    A K-way ranking becomes C(K, 2) of these (InstructGPT); ``weight`` is 1/C(K,2)-style
    normalisation or 1.0, set by the store. ``target`` is the probability that ``chosen`` is
    the better answer: 1.0 for a vote, 0.5 for a tie (the loss then pulls both rewards together).
    """

    pair_id: str
    prompt: tuple[ChatMessage, ...]
    chosen: str
    rejected: str
    weight: float = 1.0
    target: float = 1.0
    # Pseudonymous id of the voter: the reward model weights users by their reliability
    # (learner.rm.reliability). None for comparisons of unknown origin (files, tests).
    user_id: str | None = None


@dataclass(frozen=True)
class Rating:
    """An absolute judgement of one answer: a thumbs up (``good``) or down, or half of a
    "both bad" vote (each answer of the pair counts as a thumbs down)."""

    pair_id: str
    prompt: tuple[ChatMessage, ...]
    response: str
    good: bool
    weight: float = 1.0


@dataclass(frozen=True)
class SFTExample:
    """A demonstration: the conversation so far and the answer to imitate."""

    prompt: tuple[ChatMessage, ...]
    completion: str
