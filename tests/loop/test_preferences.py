"""Preference functions: the built-in tastes, the Bradley-Terry noise model, rates, loading."""

from __future__ import annotations

import math
import random

import pytest

from loop.preferences import (
    NoiseConfig,
    NoisyPreference,
    PreferenceOutcome,
    UtilityPreference,
    concise,
    concise_utility,
    format,
    friendly,
    load_preference,
    outcome_from_utilities,
    plackett_luce,
    sample_rating,
    sigmoid,
)

SHORT = "Canberra is the capital."
LONG = (
    "The capital of Australia is Canberra, which was chosen as a compromise between Sydney "
    "and Melbourne in the early twentieth century and is home to Parliament House."
)


def test_concise_prefers_the_shorter_answer_in_either_position() -> None:
    assert concise("q", [SHORT, LONG]) == PreferenceOutcome(
        "choice", choice=0, utilities=concise("q", [SHORT, LONG]).utilities
    )
    assert concise("q", [LONG, SHORT]).choice == 1


def test_concise_floor_makes_empty_and_one_word_answers_lose() -> None:
    normal = " ".join(["word"] * 40)
    assert concise("q", ["", normal]).choice == 1
    assert concise("q", ["Yes", normal]).choice == 1
    assert concise_utility("q", "") < concise_utility("q", " ".join(["w"] * 150))


def test_equal_utilities_tie_and_k3_ranks_by_utility() -> None:
    assert concise("q", [SHORT, SHORT]).kind == "tie"
    mid = " ".join(["word"] * 12)
    out = concise("q", [LONG, SHORT, mid])
    assert out.kind == "ranking" and out.ranking == (1, 2, 0)


def test_friendly_and_format_prefer_their_features() -> None:
    plain = "The boiling point of water at sea level is 100 degrees Celsius."
    warm = "Hi! Great question. " + plain + " Hope this helps!"
    assert friendly("q", [plain, warm]).choice == 1
    listed = "Three tips:\n- sleep eight hours\n- drink water\n- walk daily"
    prose = "Well, I think you should sleep eight hours, drink water and also walk daily."
    assert format("q", [prose, listed]).choice == 1


@pytest.mark.parametrize("pref", [concise, friendly, format])
def test_rewrite_moves_an_answer_toward_the_taste(pref: UtilityPreference) -> None:
    original = (
        "Well, there are many ways to do this. You can start slowly. Then you keep "
        "going every day. After a month it becomes a habit. Many people find it easy."
    )
    assert pref.rewrite is not None
    rewritten = pref.rewrite("q", original)
    assert pref.utility("q", rewritten) > pref.utility("q", original)


def test_noise_zero_is_deterministic() -> None:
    outcomes = {
        NoisyPreference(concise, NoiseConfig(0.0), random.Random(seed))("q", [LONG, SHORT])
        for seed in range(50)
    }
    assert outcomes == {concise("q", [LONG, SHORT])}


class _Fixed:
    """A preference with given utilities, to test the noise model in isolation."""

    def __init__(self, utilities: tuple[float, ...]) -> None:
        self.utilities = utilities

    def __call__(self, prompt: str, answers: list[str]) -> PreferenceOutcome:
        return outcome_from_utilities(list(self.utilities))


@pytest.mark.parametrize(("gap", "temperature"), [(0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (1.0, 0.5)])
def test_bradley_terry_frequencies_match_sigmoid(gap: float, temperature: float) -> None:
    draws = 6000
    voter = NoisyPreference(_Fixed((gap, 0.0)), NoiseConfig(temperature), random.Random(1234))
    wins = sum(voter("q", ["a", "b"]).choice == 0 for _ in range(draws))
    expected = sigmoid(gap / temperature)
    # Four binomial standard errors: a wrong formula (e.g. no temperature) is far outside.
    tolerance = 4 * math.sqrt(expected * (1 - expected) / draws)
    assert abs(wins / draws - expected) < tolerance


def test_plackett_luce_top_choice_is_softmax() -> None:
    utilities = (1.0, 0.0, -1.0)
    rng = random.Random(7)
    draws = 6000
    firsts = [plackett_luce(utilities, 1.0, rng)[0] for _ in range(draws)]
    z = sum(math.exp(u) for u in utilities)
    for i, u in enumerate(utilities):
        p = math.exp(u) / z
        assert abs(firsts.count(i) / draws - p) < 4 * math.sqrt(p * (1 - p) / draws)


def test_tie_and_both_bad_rates() -> None:
    voter = NoisyPreference(
        concise, NoiseConfig(1.0, tie_rate=0.2, both_bad_rate=0.1), random.Random(3)
    )
    kinds = [voter("q", [LONG, SHORT]).kind for _ in range(5000)]
    assert abs(kinds.count("tie") / 5000 - 0.2) < 0.025
    assert abs(kinds.count("both_bad") / 5000 - 0.1) < 0.02
    assert set(kinds) == {"tie", "both_bad", "choice"}


def test_noise_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        NoiseConfig(-1.0)
    with pytest.raises(ValueError):
        NoiseConfig(1.0, tie_rate=0.7, both_bad_rate=0.6)


def test_sample_rating() -> None:
    rng = random.Random(0)
    assert sample_rating(0.5, 0.0, 0.0, rng) == "up"
    assert sample_rating(-0.5, 0.0, 0.0, rng) == "down"
    ups = sum(sample_rating(1.0, 0.0, 1.0, rng) == "up" for _ in range(4000))
    assert abs(ups / 4000 - sigmoid(1.0)) < 0.03


def test_load_preference() -> None:
    assert load_preference("concise") is concise
    assert load_preference("loop.preferences:friendly") is friendly
    with pytest.raises(ValueError, match="no callable"):
        load_preference("loop.preferences:nope")
    with pytest.raises(ValueError, match="cannot import"):
        load_preference("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="unknown preference"):
        load_preference("rude")
