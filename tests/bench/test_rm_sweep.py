"""The sweep's simulation helpers: answer cuts, noise-free scoring, noisy votes and thumbs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import rm_sweep
from loop.preferences import concise


class WordTokenizer:
    """One token per word: enough to test cutting answers at a token limit."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(f"w{i}" for i in ids)


def pool_pair(a: int, b: int, a_eos: bool = True, b_eos: bool = True) -> rm_sweep.PoolPair:
    return rm_sweep.PoolPair("train", "Q?", list(range(a)), list(range(b)), a_eos, b_eos)


def test_a_lower_limit_is_the_same_sample_cut_and_no_longer_ended() -> None:
    tok = WordTokenizer()
    assert rm_sweep.answer_text(tok, [1, 2, 3], True, 5) == ("w1 w2 w3", True)
    assert rm_sweep.answer_text(tok, [1, 2, 3], True, 2) == ("w1 w2", False)
    assert rm_sweep.answer_text(tok, [1, 2, 3], False, 5) == ("w1 w2 w3", False)


def test_score_pool_uses_the_noise_free_utilities() -> None:
    rows = rm_sweep.score_pool(
        [pool_pair(10, 40), pool_pair(50, 60, False, False)], WordTokenizer(), concise, 45
    )
    assert rows[0].utilities == (
        concise.utility("", rows[0].texts[0]),
        concise.utility("", rows[0].texts[1]),
    )
    assert rows[0].utilities[0] > rows[0].utilities[1]  # shorter wins under concise
    assert not rows[0].both_cut and rows[1].both_cut


def test_noisy_votes_follow_bradley_terry_and_noise_zero_is_the_truth() -> None:
    rows = rm_sweep.score_pool([pool_pair(5, 55)] * 2000, WordTokenizer(), concise, 100)
    truth = rm_sweep.noisy_votes(rows, 0.0, 0)
    assert all(c.chosen == rows[0].texts[0] for c in truth)
    noisy = rm_sweep.noisy_votes(rows, 1.0, 0)
    agree = sum(c.chosen == rows[0].texts[0] for c in noisy) / len(noisy)
    # u = -words/25: a 50-word gap is 2 units, sigmoid(2) = 0.881
    assert agree == pytest.approx(0.881, abs=0.03)


def test_thumbs_come_at_the_rate_asked() -> None:
    rows = rm_sweep.score_pool([pool_pair(5, 55)] * 1000, WordTokenizer(), concise, 100)
    thumbs = rm_sweep.noisy_thumbs(rows, 0.1, concise.neutral, 1.0, 0)
    assert 60 < len(thumbs) < 140
    assert rm_sweep.noisy_thumbs(rows, 0.0, concise.neutral, 1.0, 0) == []


class LengthRewardModel:
    """Scores shorter answers higher: what a reward model that learned `concise` does."""

    def score(self, prompts: list[object], answers: list[str]) -> object:
        import torch

        return torch.tensor([-float(len(a.split())) for a in answers])


def test_score_measures_a_trained_reward_model_against_the_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    import learner.modeling

    pool = tmp_path / "pool.jsonl"
    lines = [pool_pair(5 + i, 30 + i) for i in range(6)] + [pool_pair(8, 8)]
    pool.write_text("\n".join(json.dumps(p.__dict__) for p in lines) + "\n")
    monkeypatch.setattr(learner.modeling, "load_tokenizer", lambda _: WordTokenizer())
    monkeypatch.setattr(rm_sweep, "resolve_model_dir", lambda d: Path(d))
    monkeypatch.setattr(rm_sweep.RewardModel, "load", lambda *a, **k: LengthRewardModel())
    out = tmp_path / "table.md"
    args = argparse.Namespace(
        model_dir="m",
        pool=[pool],
        reward_adapter=tmp_path / "v1",
        label="concise run v1",
        preferences="concise,format",
        max_tokens=128,
        out=out,
    )
    rm_sweep._score(args)
    table = out.read_text()
    # The equal-length pair has equal utility: it is left out (n=6), the rest all ordered right.
    assert "| concise run v1 | concise | 128 | 7 | 1.000 [" in table and "(n=6) |" in table
    assert "| concise run v1 | format | 128 | 7 |" in table
    assert table in capsys.readouterr().out + "\n"
