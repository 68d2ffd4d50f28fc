"""Simulated users' tastes: preference functions over K answers to one prompt.

A preference function has the signature ``(prompt: str, answers: list[str]) ->
PreferenceOutcome`` and is named on the command line as ``module:function``
(``loop.preferences:concise``). The built-ins score each answer with a scalar *utility* and,
left alone, are deterministic: the highest utility wins, equal utilities tie. Human-like noise is
added outside the function by :class:`NoisyPreference`, which resamples the outcome from the
utilities with the Bradley-Terry / Plackett-Luce model (Bradley & Terry 1952; the model the
reward model itself fits, Ouyang et al. 2022, "InstructGPT", eq. 1):

    P(a preferred to b) = sigmoid((u_a - u_b) / temperature)

so ``temperature`` (``--noise``) is how many utility units make a 73 % / 27 % preference.

The utilities are smooth functions of surface features (length, tone words, list formatting),
which a small policy can move within a few hundred comparisons; ``concise`` (length only) is the
easiest to learn. Each built-in also knows how to *rewrite* an answer toward its taste, which
the simulator sends as a correction (a demonstration for SFT).
"""

from __future__ import annotations

import importlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

OutcomeKind = Literal["choice", "ranking", "tie", "both_bad"]


@dataclass(frozen=True)
class PreferenceOutcome:
    """What a user said about K answers (indexes into the ``answers`` list given).

    ``choice``: index of the preferred answer (K = 2). ``ranking``: all indexes best first
    (K > 2). ``tie`` and ``both_bad``: no winner. ``utilities``: the per-answer scores the
    outcome came from, when the function has them (needed for noise and ratings).
    """

    kind: OutcomeKind
    choice: int | None = None
    ranking: tuple[int, ...] | None = None
    utilities: tuple[float, ...] | None = None

    def best(self) -> int | None:
        """Index of the winning answer, or None for a tie / both bad."""
        if self.kind == "choice":
            return self.choice
        if self.kind == "ranking" and self.ranking:
            return self.ranking[0]
        return None


class PreferenceFn(Protocol):
    def __call__(self, prompt: str, answers: list[str]) -> PreferenceOutcome: ...


# ---------------------------------------------------------------------------------------------
# Utilities: scalar score of one answer. Smooth in their features so that small changes in the
# policy move them a little (a learnable signal), with a floor so that empty answers lose.

_WORD = re.compile(r"\w+", re.UNICODE)


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def _floor_penalty(words: int, floor: int, per_word: float) -> float:
    """0 at or above ``floor`` words, falling linearly below it: empty answers never win."""
    return -per_word * max(0, floor - words)


def concise_utility(prompt: str, answer: str) -> float:
    """Shorter is better: -1 per 25 words; under 3 words costs 2 per missing word.

    u(0 words) = -6.12 ~ u(153 words), so an empty answer loses to any answer of normal length.
    """
    words = word_count(answer)
    return -max(words, 3) / 25.0 + _floor_penalty(words, floor=3, per_word=2.0)


_FRIENDLY = re.compile(
    r"\b(hello|hi|hey|glad|happy|sure|great|thanks|thank you|welcome|hope|enjoy|love|"
    r"wonderful|awesome|of course|absolutely|good luck|cheers|friend|fun)\b",
    re.IGNORECASE,
)
_GREETING = re.compile(r"^\s*(hello|hi|hey|sure|of course|absolutely|great)\b", re.IGNORECASE)


def friendly_utility(prompt: str, answer: str) -> float:
    """Warm tone: friendly words (saturating), exclamation marks (up to 3), an opening greeting.

    log1p saturation keeps one more friendly word worth less than the first, so the optimum is
    a warm answer rather than a word salad of "great!".
    """
    words = word_count(answer)
    friendly = len(_FRIENDLY.findall(answer))
    exclaims = min(answer.count("!"), 3)
    greeting = 1.0 if _GREETING.match(answer) else 0.0
    score = 1.5 * math.log1p(friendly) + 0.4 * exclaims + greeting
    return score + _floor_penalty(words, floor=3, per_word=1.0)


_BULLET = re.compile(r"^\s*([-*\u2022]|\d+[.)])\s+\S")
_HEDGE = re.compile(r"^\s*(well|so|i think|as an ai|i'm|i am|it depends|hmm)\b", re.IGNORECASE)


def format_utility(prompt: str, answer: str) -> float:
    """Structured answers: share of lines that are list items, a few items, a direct opening.

    A direct opening is a first line of at most 15 words that does not start with a hedge.
    """
    lines = [line for line in answer.splitlines() if line.strip()]
    words = word_count(answer)
    if not lines:
        return _floor_penalty(0, floor=3, per_word=1.0)
    bullets = sum(1 for line in lines if _BULLET.match(line))
    share = bullets / len(lines)
    first = lines[0]
    direct = 1.0 if word_count(first) <= 15 and not _HEDGE.match(first) else 0.0
    score = 1.5 * share + 0.3 * min(bullets, 4) + direct
    return score + _floor_penalty(words, floor=3, per_word=1.0)


# ---------------------------------------------------------------------------------------------
# Rewrites: an answer moved toward a taste, sent as a correction.

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def concise_rewrite(prompt: str, answer: str, max_words: int = 20) -> str:
    """The first sentence, cut to ``max_words`` words."""
    sentences = _sentences(answer) or [answer.strip()]
    first = sentences[0].split()
    if len(first) <= max_words:
        return " ".join(first)
    return " ".join(first[:max_words]).rstrip(",;:") + "."


def friendly_rewrite(prompt: str, answer: str) -> str:
    body = answer.strip() or "Here is what I know."
    return f"Hi! Happy to help. {body} Hope this helps, good luck!"


def format_rewrite(prompt: str, answer: str) -> str:
    """A short direct first line, then the remaining sentences as a bullet list."""
    sentences = _sentences(answer) or ["Here is the answer."]
    head = " ".join(sentences[0].split()[:15])
    items = sentences[1:5] or [head]
    return head + "\n" + "\n".join(f"- {item}" for item in items)


# ---------------------------------------------------------------------------------------------
# Utility-based preferences (deterministic) and the noise model.


def outcome_from_utilities(utilities: list[float], tol: float = 1e-9) -> PreferenceOutcome:
    """Noise-free outcome: the best utility wins; equal best utilities tie (K = 2)."""
    us = tuple(float(u) for u in utilities)
    order = tuple(sorted(range(len(us)), key=lambda i: -us[i]))
    if len(us) == 2:
        if abs(us[0] - us[1]) <= tol:
            return PreferenceOutcome("tie", utilities=us)
        return PreferenceOutcome("choice", choice=order[0], utilities=us)
    return PreferenceOutcome("ranking", ranking=order, utilities=us)


@dataclass(frozen=True)
class UtilityPreference:
    """A preference function made from a per-answer utility (and optional rewrite).

    ``neutral`` is the utility of an answer the user finds just acceptable: thumbs up above it,
    down below it (see :func:`sample_rating`).
    """

    name: str
    utility: Callable[[str, str], float]
    rewrite: Callable[[str, str], str] | None = None
    neutral: float = 0.0

    def __call__(self, prompt: str, answers: list[str]) -> PreferenceOutcome:
        return outcome_from_utilities([self.utility(prompt, a) for a in answers])


concise = UtilityPreference("concise", concise_utility, concise_rewrite, neutral=-1.6)
friendly = UtilityPreference("friendly", friendly_utility, friendly_rewrite, neutral=1.5)
format = UtilityPreference("format", format_utility, format_rewrite, neutral=1.0)

BUILTINS: dict[str, UtilityPreference] = {p.name: p for p in (concise, friendly, format)}


@dataclass(frozen=True)
class NoiseConfig:
    """How a simulated user departs from the noise-free preference.

    ``temperature`` 0 = always the best utility. ``tie_rate`` / ``both_bad_rate``: chance of
    answering "tie" / "both bad" regardless of the answers (real users do both).
    """

    temperature: float = 0.0
    tie_rate: float = 0.0
    both_bad_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        for name in ("tie_rate", "both_bad_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.tie_rate + self.both_bad_rate > 1.0:
            raise ValueError("tie_rate + both_bad_rate must be <= 1")


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def plackett_luce(
    utilities: tuple[float, ...], temperature: float, rng: random.Random
) -> tuple[int, ...]:
    """Sample a ranking, best first: pick each next item with weight exp(u / temperature).

    For K = 2 this is exactly Bradley-Terry: P(a first) = sigmoid((u_a - u_b) / temperature).
    """
    remaining = list(range(len(utilities)))
    ranking: list[int] = []
    while remaining:
        top = max(utilities[i] for i in remaining)
        # Subtracting the max keeps exp() finite for large utility gaps.
        weights = [math.exp((utilities[i] - top) / temperature) for i in remaining]
        pick = rng.choices(remaining, weights=weights)[0]
        ranking.append(pick)
        remaining.remove(pick)
    return tuple(ranking)


@dataclass
class NoisyPreference:
    """Wraps a preference function with Bradley-Terry noise, ties and both-bad votes.

    Outcomes without utilities (a custom function that only returns a choice) pass through
    unchanged apart from the tie / both-bad rates.
    """

    fn: PreferenceFn
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    rng: random.Random = field(default_factory=random.Random)

    def __call__(self, prompt: str, answers: list[str]) -> PreferenceOutcome:
        outcome = self.fn(prompt, answers)
        draw = self.rng.random()
        if draw < self.noise.tie_rate:
            return PreferenceOutcome("tie", utilities=outcome.utilities)
        if draw < self.noise.tie_rate + self.noise.both_bad_rate:
            return PreferenceOutcome("both_bad", utilities=outcome.utilities)
        us = outcome.utilities
        if us is None or self.noise.temperature == 0.0 or outcome.kind == "both_bad":
            return outcome
        ranking = plackett_luce(us, self.noise.temperature, self.rng)
        if len(us) == 2:
            return PreferenceOutcome("choice", choice=ranking[0], utilities=us)
        return PreferenceOutcome("ranking", ranking=ranking, utilities=us)


def sample_rating(
    utility: float, neutral: float, temperature: float, rng: random.Random
) -> Literal["up", "down"]:
    """Thumbs for one answer: up with probability sigmoid((u - neutral) / temperature)."""
    if temperature == 0.0:
        return "up" if utility >= neutral else "down"
    return "up" if rng.random() < sigmoid((utility - neutral) / temperature) else "down"


def load_preference(spec: str) -> PreferenceFn:
    """``module:function`` (or a built-in name such as ``concise``) -> the callable."""
    if ":" not in spec:
        if spec in BUILTINS:
            return BUILTINS[spec]
        raise ValueError(
            f"unknown preference {spec!r}: use module:function or one of {', '.join(BUILTINS)}"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import preference module {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{spec!r}: {module_name} has no callable {attr!r}")
    return fn


def rewrite_for(fn: PreferenceFn) -> Callable[[str, str], str] | None:
    """The function's rewrite toward its taste, if it has one (built-ins do)."""
    rewrite = getattr(fn, "rewrite", None)
    return rewrite if callable(rewrite) else None


def neutral_for(fn: PreferenceFn) -> float:
    return float(getattr(fn, "neutral", 0.0))
