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
        # Distinct answers of one request (index 0..n-1) must differ, yet stay reproducible.
        gen.manual_seed((seed * 1_000_003 + index) & ((1 << 63) - 1))
    return gen


def sample_rows(
    logits: torch.Tensor,  # (B, V) float
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator],
) -> torch.Tensor:  # (B,) long
    """One next token per row."""
    tokens = logits.argmax(dim=-1)  # (B,)
    sampled = [i for i, t in enumerate(temperatures) if t > 0.0]
    if not sampled:
        return tokens
    device = logits.device
    idx = torch.tensor(sampled, dtype=torch.long, device=device)
    temps = torch.tensor([temperatures[i] for i in sampled], dtype=logits.dtype, device=device)
    probs = torch.softmax(logits[idx].float() / temps[:, None], dim=-1)  # (S, V)
    order: torch.Tensor | None = None
    if any(top_ps[i] < 1.0 for i in sampled):
        # Sorting the vocabulary is the costly part; only nucleus sampling needs it.
        probs, order = probs.sort(dim=-1, descending=True)  # (S, V)
        cdf = probs.cumsum(dim=-1)  # (S, V)
        top_p = torch.tensor([top_ps[i] for i in sampled], dtype=cdf.dtype, device=device)
        top_p = top_p[:, None]  # (S, 1)
        # Drop a token once the mass before it already reaches top_p (the first always stays).
        probs = probs.masked_fill(cdf - probs >= top_p, 0.0)
    # Inverse CDF works in any token order, so plain rows sample from the unsorted vocabulary.
    cdf = probs.cumsum(dim=-1)  # (S, V)
    # The row generators are CPU ones: a seeded answer draws the same numbers on any device.
    uniforms = torch.stack([torch.rand((), generator=generators[i]) for i in sampled])  # (S,)
    uniforms = uniforms.to(device)
    target = (uniforms * cdf[:, -1])[:, None]  # (S, 1)
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)  # (S, 1)
    tokens[idx] = (order.gather(-1, pick) if order is not None else pick).squeeze(-1)
    return tokens
