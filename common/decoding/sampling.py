"""Per-row sampling for a decode batch: each row keeps its own temperature, top-p and seed.

Rows with temperature 0 take the argmax. The others sample by inverse CDF with one uniform draw
per row from that row's own ``torch.Generator``, so a seeded answer does not depend on which other
requests share its batch. Top-p (nucleus) filtering follows Holtzman et al. 2019,
"The Curious Case of Neural Text Degeneration" (https://arxiv.org/abs/1904.09751): keep the
smallest set of tokens whose probability mass reaches ``top_p``.
"""

from __future__ import annotations

import os

import torch


def make_generator(seed: int | None, index: int) -> torch.Generator:
    """A row's random stream: reproducible from (seed, answer index), fresh entropy otherwise."""
    gen = torch.Generator()
    if seed is None:
        gen.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
    else:
        gen.manual_seed(row_seed(seed, index))
    return gen


def row_seed(seed: int, index: int) -> int:
    """The seed of answer ``index`` of a request seeded ``seed``: distinct answers of one request
    (index 0..n-1) must differ, yet stay reproducible."""
    return (seed * 1_000_003 + index) & ((1 << 63) - 1)


def sample_rows(
    logits: torch.Tensor,  # (B, V) float
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator],
) -> torch.Tensor:  # (B,) long
    """One next token per row.

    Every pass over a 128 x 49152 batch of logits costs milliseconds on a CPU (sampling was
    13 % of a decode step), so a row pays only for what it uses: the argmax is taken for greedy
    rows only, a batch that samples every row is not gathered, and the temperature divides
    while converting to float32 (one pass instead of two). Plain and nucleus rows are sampled
    apart: a plain row's inverse CDF runs over the unsorted vocabulary, so its seeded token
    must not depend on whether a batch-mate asked for top-p (it did while one sort served
    every row)."""
    device = logits.device
    sampled = [i for i, t in enumerate(temperatures) if t > 0.0]
    if not sampled:
        return logits.argmax(dim=-1)
    every = len(sampled) == logits.shape[0]
    idx = torch.tensor(sampled, dtype=torch.long, device=device)
    temps = torch.tensor([temperatures[i] for i in sampled], dtype=torch.float32, device=device)
    # A float32 divisor promotes bfloat16 logits to float32 in the same pass.
    probs = torch.softmax((logits if every else logits[idx]) / temps[:, None], dim=-1)  # (S, V)
    # The row generators are CPU ones: a seeded answer draws the same numbers on any device.
    uniforms = torch.stack([torch.rand((), generator=generators[i]) for i in sampled])  # (S,)
    uniforms = uniforms.to(device)
    picked = torch.zeros(len(sampled), dtype=torch.long, device=device)
    plain = [j for j, i in enumerate(sampled) if top_ps[i] >= 1.0]
    if plain:
        rows = torch.tensor(plain, dtype=torch.long, device=device)
        # Inverse CDF works in any token order, so plain rows sample the unsorted vocabulary.
        picked[rows] = _inverse_cdf(_take(probs, rows), uniforms[rows])
    nucleus = [j for j, i in enumerate(sampled) if top_ps[i] < 1.0]
    if nucleus:
        rows = torch.tensor(nucleus, dtype=torch.long, device=device)
        cut = [top_ps[sampled[j]] for j in nucleus]
        picked[rows] = _pick_nucleus(_take(probs, rows), uniforms[rows], cut)
    if every:
        return picked
    tokens = logits.new_zeros(logits.shape[0], dtype=torch.long)
    greedy = [i for i, t in enumerate(temperatures) if t <= 0.0]
    rows = torch.tensor(greedy, dtype=torch.long, device=device)
    tokens[rows] = logits[rows].argmax(dim=-1)
    tokens[idx] = picked
    return tokens


def _take(probs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``probs[rows]``, without the copy when ``rows`` are all of them (in order)."""
    return probs if rows.numel() == probs.shape[0] else probs[rows]


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """(S, V) unnormalised probabilities and (S,) uniforms in; (S,) token positions out."""
    cdf = probs.cumsum(dim=-1)  # (S, V)
    target = (uniforms * cdf[:, -1])[:, None]  # (S, 1)
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)  # (S, 1)
    return pick.squeeze(-1)


def _pick_nucleus(probs: torch.Tensor, uniforms: torch.Tensor, top_ps: list[float]) -> torch.Tensor:
    # Sorting the vocabulary is the costly part; only nucleus rows pay for it.
    probs, order = probs.sort(dim=-1, descending=True)  # (S, V)
    cdf = probs.cumsum(dim=-1)  # (S, V)
    top_p = torch.tensor(top_ps, dtype=cdf.dtype, device=probs.device)[:, None]  # (S, 1)
    # Drop a token once the mass before it already reaches top_p (the first always stays).
    probs = probs.masked_fill(cdf - probs >= top_p, 0.0)
    return order.gather(-1, _inverse_cdf(probs, uniforms)[:, None]).squeeze(-1)
