"""Which reward-head input carries the users' taste? Linear probes on the frozen base model.

A fast stand-in for ``bench/rm_sweep.py`` (which trains the whole reward model, 14 min each on
2 cores): the base model's final hidden states are computed once for every answer of a pool,
then a logistic pairwise model (Bradley-Terry on feature differences, L2) is fitted to simulated
noisy votes for each head input, and scored against the noise-free ordering on the pairs it did
not see (4-fold cross-validation over pairs, several vote seeds). Head inputs: the last token's
state (``last``, the classic reward head), the mean of the answer tokens' states, and their mean
and scaled sum (``mean+sum``, ``learner.rm.model``).

Usage::

    .venv/bin/python -m bench.rm_probe --pool var/rm_sweep/pool.jsonl \
        --preferences concise,friendly,format --max-tokens 160
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from typing import Any

import torch

from bench.bench_all import command_line, machine
from bench.rm_sweep import Scored, load_pool, score_pool
from common.embedded_model import resolve_model_dir
from learner.modeling import (
    encode_pair,
    last_token_index,
    load_base_model,
    load_tokenizer,
    pad_right_pairs,
    position_ids_from_mask,
)
from learner.rm.model import pool_answer
from loop.preferences import load_preference
from schemas.events import ChatMessage

HEAD_INPUTS = ("last", "mean", "mean+sum")
# ``--layers``: the answer's pooled states after these decoder layers (0 = the input
# embeddings, a bag of words), as extra head inputs named ``L<n> mean+sum``.


@torch.no_grad()
def features(
    model: Any, tokenizer: Any, rows: list[Scored], layers: tuple[int, ...] = ()
) -> dict[str, torch.Tensor]:
    """Per answer (2 per pair, a then b): each head input, (2N, F)."""
    items = [(r.prompt, t) for r in rows for t in r.texts]
    names = HEAD_INPUTS + tuple(f"L{n} mean+sum" for n in layers)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(items), 16):
        batch = items[start : start + 16]
        encoded = [
            encode_pair(tokenizer, (ChatMessage(role="user", content=q),), t, 512) for q, t in batch
        ]
        ids, mask, answer = pad_right_pairs(encoded, tokenizer.pad_token_id)
        decoded = model.get_decoder()(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
            output_hidden_states=bool(layers),
        )
        hidden = decoded.last_hidden_state
        for n in layers:
            out[f"L{n} mean+sum"].append(pool_answer(decoded.hidden_states[n], answer))
        last = hidden[torch.arange(len(batch)), last_token_index(mask)]
        pooled = pool_answer(hidden, answer)
        out["last"].append(last)
        out["mean"].append(pooled[:, : last.shape[1]])
        out["mean+sum"].append(pooled)
        print(f"features: {start + len(batch)}/{len(items)} answers", file=sys.stderr, flush=True)
    return {name: torch.cat(parts) for name, parts in out.items()}


def fit_pairwise(diffs: torch.Tensor, chose_a: torch.Tensor, l2: float) -> torch.Tensor:
    """Bradley-Terry weights on feature differences (no bias: swapping a and b flips the sign)."""
    beta = torch.zeros(diffs.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([beta], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = diffs @ beta
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, chose_a)
        loss = loss + l2 * (beta**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return beta.detach()


def probe(
    feats: torch.Tensor,
    utilities: torch.Tensor,
    noise: float,
    seeds: int,
    l2: float,
    train_size: int | None = None,
) -> float:
    """Mean accuracy vs the noise-free ordering on held-out folds' pairs whose utilities differ.
    ``train_size``: fit on at most that many of each fold's training pairs (a learning curve)."""
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    diffs = z[0::2] - z[1::2]
    gap = utilities[:, 0] - utilities[:, 1]
    n = len(gap)
    accs: list[float] = []
    for seed in range(seeds):
        rng = random.Random(seed)
        votes = torch.tensor(
            [float(rng.random() < 1 / (1 + math.exp(-g / noise))) for g in gap.tolist()]
        )
        order = list(range(n))
        rng.shuffle(order)
        for fold in range(4):
            test = set(order[fold::4])
            train = [i for i in order if i not in test][:train_size]
            beta = fit_pairwise(diffs[train], votes[train], l2)
            judged = [i for i in sorted(test) if abs(gap[i]) > 1e-9]
            right = ((diffs[judged] @ beta > 0) == (gap[judged] > 0)).float()
            accs.append(right.mean().item())
    return sum(accs) / len(accs)


def pair_utilities(
    args: argparse.Namespace, pool: list[Any], tokenizer: Any, name: str
) -> tuple[torch.Tensor, int]:
    """Each pool pair's noise-free utilities under preference ``name`` (N, 2), and how many
    pairs differ."""
    rows = score_pool(pool, tokenizer, load_preference(name), args.max_tokens)
    utilities = torch.tensor([r.utilities for r in rows])
    return utilities, int(((utilities[:, 0] - utilities[:, 1]).abs() > 1e-9).sum())


def learning_curve(
    args: argparse.Namespace, pool: list[Any], tokenizer: Any, feats: torch.Tensor
) -> list[str]:
    """Accuracy vs truth of the mean+sum probe (L2 3) by the number of noisy votes it saw."""
    sizes = sorted(args.train_sizes)
    lines = [
        "| preference | pairs that differ | " + " | ".join(f"{s} votes" for s in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for name in args.preferences.split(","):
        utilities, differ = pair_utilities(args, pool, tokenizer, name)
        accs = [probe(feats, utilities, args.noise, args.seeds, 3.0, size) for size in sizes]
        lines.append(f"| {name} | {differ} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
        print(lines[-1], flush=True)
    return lines


def head_table(
    args: argparse.Namespace, pool: list[Any], tokenizer: Any, feats: dict[str, torch.Tensor]
) -> list[str]:
    """Accuracy vs truth of each head input's probe, at each L2."""
    names = list(feats)
    lines = [
        "| preference | pairs that differ | L2 | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for name in args.preferences.split(","):
        utilities, differ = pair_utilities(args, pool, tokenizer, name)
        for l2 in args.l2:
            accs = [probe(feats[h], utilities, args.noise, args.seeds, l2) for h in names]
            lines.append(
                f"| {name} | {differ} | {l2:g} | " + " | ".join(f"{a:.3f}" for a in accs) + " |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--pool", type=Path, nargs="+", required=True, help="pool files")
    p.add_argument("--model-dir", default="embedded")
    p.add_argument("--preferences", default="concise,friendly,format")
    p.add_argument("--max-tokens", type=int, default=160, help="answer limit applied to the pool")
    p.add_argument("--split", default="train", help="pool lines of this split")
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--seeds", type=int, default=6, help="vote draws (each 4-fold)")
    p.add_argument("--l2", type=float, nargs="+", default=[0.3, 3.0])
    p.add_argument(
        "--train-sizes",
        type=int,
        nargs="+",
        default=None,
        help="learning curve: the mean+sum probe at L2 3 fitted on this many pairs per fold",
    )
    p.add_argument(
        "--layers",
        type=int,
        nargs="*",
        default=[],
        help="also probe the pooled states after these decoder layers (0 = input embeddings)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the features in this file and reuse them when it exists (same pool and layers)",
    )
    p.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = p.parse_args()
    model_dir = resolve_model_dir(args.model_dir)
    tokenizer = load_tokenizer(model_dir)
    model = load_base_model(model_dir).eval()
    pool = [q for q in load_pool(args.pool) if q.split == args.split]
    # The texts do not depend on the preference: features once, from the first scoring.
    first = score_pool(pool, tokenizer, load_preference("concise"), args.max_tokens)
    if args.cache and args.cache.is_file():
        feats = torch.load(args.cache)
    else:
        feats = features(model, tokenizer, first, tuple(args.layers))
        if args.cache:
            torch.save(feats, args.cache)
    lines = [
        f"Probe `.venv/bin/python -m bench.rm_probe {command_line()}` ({len(pool)} pairs, "
        f"noise {args.noise}, {args.seeds} vote draws x 4 folds).",
        f"Machine: {machine()}.",
        "",
    ]
    if args.train_sizes:
        lines += learning_curve(args, pool, tokenizer, feats["mean+sum"])
    else:
        lines += head_table(args, pool, tokenizer, feats)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with args.out.open("a") as sink:
            sink.write(text + "\n")


if __name__ == "__main__":
    main()
