"""Per-row sampling (common.decoding.sampling): greedy rows, top-p, seeded rows independent of
their batch-mates."""

from __future__ import annotations

import torch

from common.decoding.sampling import make_generator, sample_rows


def test_sampling_greedy_rows_and_top_p() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 2.9, -9.0], [0.0, 0.0, 9.0]])
    gens = [make_generator(1, i) for i in range(3)]
    # Row 0 greedy; row 1 with top_p tiny keeps only its most likely token; row 2 sampled.
    out = sample_rows(logits, [0.0, 1.0, 1.0], [1.0, 1e-6, 1.0], gens)
    assert out[0] == 1
    assert out[1] == 0


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    gens = [make_generator(3, i) for i in range(4000)]
    out = sample_rows(logits, [1.0] * 4000, [1.0] * 4000, gens)
    freq = torch.bincount(out, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)
    # top_p = 0.8 drops the 0.1 token and renormalises the other two (0.78 / 0.22).
    out = sample_rows(logits, [1.0] * 4000, [0.8] * 4000, gens)
    freq = torch.bincount(out, minlength=3).float() / 4000
    assert freq[2] == 0 and abs(float(freq[0]) - 0.7 / 0.9) < 0.03


def test_a_row_samples_the_same_token_alone_or_in_any_batch() -> None:
    logits = torch.randn((6, 50), generator=torch.Generator().manual_seed(2))
    temps, top_ps = [0.0, 0.7, 1.0, 0.0, 1.3, 1.0], [1.0, 1.0, 0.9, 1.0, 1.0, 1.0]
    batch = sample_rows(logits, temps, top_ps, [make_generator(9, i) for i in range(6)])
    alone = [
        int(
            sample_rows(
                logits[i : i + 1], temps[i : i + 1], top_ps[i : i + 1], [make_generator(9, i)]
            )[0]
        )
        for i in range(6)
    ]
    assert batch.tolist() == alone
    assert batch[0] == logits[0].argmax() and batch[3] == logits[3].argmax()
    # bfloat16 logits (a bfloat16 model's LM head) sample the same way.
    half = sample_rows(logits.bfloat16(), temps, top_ps, [make_generator(9, i) for i in range(6)])
    assert half.dtype == torch.long and half.shape == (6,)


def test_seeded_generators_repeat_and_differ_by_index() -> None:
    a = torch.rand(3, generator=make_generator(5, 0))
    assert torch.equal(a, torch.rand(3, generator=make_generator(5, 0)))
    assert not torch.equal(a, torch.rand(3, generator=make_generator(5, 1)))
