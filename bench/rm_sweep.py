"""Reward-model recipe sweep against the noise-free truth of simulated users.

Why one file (over 400 lines): its subcommands (generate, from-store, sweep, labels, pairing)
share one answer pool and its scoring; split, each would re-import the same half of this file.

Two steps, so that the expensive sampling is done once:

1. ``generate``: the base model answers the shipped prompts twice each at the serving
   temperature (train prompts for the votes, eval prompts for a held-out pool large enough for a
   +/-0.07 interval); the answers' token ids are kept, so any shorter answer limit is the same
   sample cut (what a lower ``max_tokens`` would have produced with the same random draws).
   ``from-store`` takes instead the pairs a run's users were shown, from its learner store.
2. ``sweep``: for each preference and recipe, simulated users vote on up to ``--comparisons``
   train pairs with Bradley-Terry noise, a reward model is trained on those noisy votes with the
   recipe, and it scores the held-out pool; reported: the label ceiling (what one noisy vote
   agrees with the truth) and the reward model's accuracy against the noise-free ordering.

``score`` measures a reward model trained elsewhere (a run's ``learner/reward/vN``) the same way,
on pool pairs it never trained on.

Usage::

    .venv/bin/python -m bench.rm_sweep generate --out var/rm_sweep/pool.jsonl
    .venv/bin/python -m bench.rm_sweep sweep --pool var/rm_sweep/pool.jsonl \
        --preferences concise,friendly,format --recipes baseline,zero-head
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import REPO
from bench.bench_all import command_line, machine
from common.chat_encoding import encode_text
from common.embedded_model import resolve_model_dir
from learner.data import Comparison, Rating
from learner.rm.config import RewardConfig
from learner.rm.model import RewardModel
from learner.rm.train import train_reward_model
from loop.labels import expected_agreement, label_ceiling, truth_accuracy
from loop.preferences import (
    load_preference,
    neutral_for,
    plackett_luce,
    sample_rating,
)
from loop.prompts import load_prompts
from schemas.events import ChatMessage

# Recipes: RewardConfig overrides. "baseline" is the recipe before this sweep existed. Each names
# its pooling, so a recipe keeps its meaning when the default changes.
RECIPES: dict[str, dict[str, Any]] = {
    # The recipe before this sweep: random-normal head, LoRA on every layer, 1 epoch.
    "baseline": {"head_init": "normal", "lora_layers": 0, "pooling": "last"},
    "zero-head": {"head_init": "zero", "lora_layers": 0, "pooling": "last"},
    # LoRA on the last 8 of 30 layers: the backward pass stops there (about 2x faster on CPU).
    "zero-head-top8": {"head_init": "zero", "lora_layers": 8, "pooling": "last"},
    "zero-head-top8-lr3e-4": {
        "head_init": "zero",
        "lora_layers": 8,
        "pooling": "last",
        "learning_rate": 3e-4,
    },
    "zero-head-top8-2ep": {
        "head_init": "zero",
        "lora_layers": 8,
        "pooling": "last",
        "num_epochs": 2,
    },
    # Head on the mean and the sum of the answer tokens' states (learner.rm.model).
    "pooled-top8": {"head_init": "zero", "lora_layers": 8, "pooling": "mean+sum"},
    # The same with the zero head at 2e-3 (the body stays at 1e-4) over 2 epochs.
    "pooled-top8-head2e-3-2ep": {
        "head_init": "zero",
        "lora_layers": 8,
        "pooling": "mean+sum",
        "head_learning_rate": 2e-3,
        "num_epochs": 2,
    },
    "zero-head-top8-2ep-cosine": {
        "head_init": "zero",
        "lora_layers": 8,
        "pooling": "last",
        "num_epochs": 2,
        "learning_rate": 3e-4,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.05,
    },
}


@dataclass(frozen=True)
class PoolPair:
    split: str
    prompt: str
    a: list[int]  # answer token ids, EOS excluded
    b: list[int]
    a_eos: bool
    b_eos: bool


def _generate(args: argparse.Namespace) -> None:
    from learner.modeling import load_base_model, load_tokenizer, set_seed, with_lora
    from learner.ppo.config import PPOConfig
    from learner.ppo.rollout import sample

    model_dir = resolve_model_dir(args.model_dir)
    tokenizer = load_tokenizer(model_dir)
    # A LoRA with B = 0 is the base model; it gives ``sample`` the PEFT model it expects.
    model = with_lora(load_base_model(model_dir), PPOConfig(), None).eval()
    jobs = [
        (split, p.prompt)
        for split, copies in (("train", args.train_copies), ("eval", args.eval_copies))
        for p in load_prompts(split)
        for _ in range(copies)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    first = sum(1 for _ in args.out.open()) if args.out.exists() else 0
    started = time.monotonic()
    with args.out.open("a") as sink:
        for start in range(first, len(jobs), args.batch_size):
            batch = jobs[start : start + args.batch_size]
            set_seed(args.seed + start)
            prompts = [(ChatMessage(role="user", content=text),) for _, text in batch]
            # Each prompt twice in one batch: the two answers of its pair.
            rollout = sample(
                model, tokenizer, prompts + prompts, 256, args.max_new_tokens, 1.0, 1.0
            )
            ids = rollout.input_ids[:, rollout.context_length :]
            n = len(batch)
            for i, (split, text) in enumerate(batch):
                pair: dict[str, Any] = {"split": split, "prompt": text}
                for side, j in (("a", i), ("b", i + n)):
                    tokens = ids[j][rollout.response_mask[j].bool()].tolist()
                    eos = bool(rollout.has_eos[j])
                    pair[side], pair[f"{side}_eos"] = (tokens[:-1] if eos else tokens), eos
                sink.write(json.dumps(pair) + "\n")
            sink.flush()
            made = start + n - first
            rate = made / max(time.monotonic() - started, 1e-9)
            print(f"generate: {start + n}/{len(jobs)} pairs ({rate:.2f} pairs/s)", flush=True)


def load_pool(paths: Path | list[Path]) -> list[PoolPair]:
    files = paths if isinstance(paths, list) else [paths]
    return [PoolPair(**json.loads(line)) for f in files for line in f.open() if line.strip()]


def _from_store(args: argparse.Namespace) -> None:
    """The answer pairs a run's users were shown (a learner store), as train-split pool lines:
    the sweep then re-votes them with any preference. An answer counts as ended by itself when
    it is shorter than ``--max-tokens`` (the store keeps texts, not finish reasons)."""
    import sqlite3

    from learner.modeling import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_dir(args.model_dir))
    db = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
    texts = dict(db.execute("SELECT response_id, text FROM served"))
    rows = db.execute("SELECT messages, response_ids FROM pairs ORDER BY seq").fetchall()
    written = 0
    with args.out.open("w") as sink:
        for messages, response_ids in rows[: args.limit or None]:
            ids = json.loads(response_ids)
            if len(ids) != 2 or not all(i in texts for i in ids):
                continue  # K-way rankings and pairs whose answers were not stored
            prompt = json.loads(messages)[-1]["content"]
            pair: dict[str, Any] = {"split": "train", "prompt": prompt}
            for side, rid in zip("ab", ids, strict=True):
                # As the learner encodes stored text: special-token text stays text.
                tokens = encode_text(tokenizer, texts[rid])
                pair[side], pair[f"{side}_eos"] = tokens, len(tokens) < args.max_tokens
            sink.write(json.dumps(pair) + "\n")
            written += 1
    print(f"from-store: {written} pairs -> {args.out}", flush=True)


def answer_text(tokenizer: Any, ids: list[int], eos: bool, max_tokens: int) -> tuple[str, bool]:
    """The answer a ``max_tokens`` limit would have shown, and whether it ended by itself."""
    ended = eos and len(ids) < max_tokens
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), ended


@dataclass
class Scored:
    prompt: str
    texts: tuple[str, str]
    utilities: tuple[float, float]
    both_cut: bool


def score_pool(pool: list[PoolPair], tokenizer: Any, fn: Any, max_tokens: int) -> list[Scored]:
    out = []
    for pair in pool:
        a, a_end = answer_text(tokenizer, pair.a, pair.a_eos, max_tokens)
        b, b_end = answer_text(tokenizer, pair.b, pair.b_eos, max_tokens)
        outcome = fn(pair.prompt, [a, b])
        utilities = outcome.utilities or ((1.0, 0.0) if outcome.best() == 0 else (0.0, 1.0))
        out.append(Scored(pair.prompt, (a, b), (utilities[0], utilities[1]), not (a_end or b_end)))
    return out


def noisy_votes(rows: list[Scored], noise: float, seed: int) -> list[Comparison]:
    rng = random.Random(seed)
    comparisons = []
    for i, row in enumerate(rows):
        first = plackett_luce(row.utilities, noise, rng)[0] if noise > 0 else _best(row)
        prompt = (ChatMessage(role="user", content=row.prompt),)
        chosen, rejected = row.texts[first], row.texts[1 - first]
        comparisons.append(Comparison(f"pair-{i}", prompt, chosen, rejected))
    return comparisons


def noisy_thumbs(
    rows: list[Scored], rate: float, neutral: float, noise: float, seed: int
) -> list[Rating]:
    """As the simulated users do: on ``rate`` of the pairs, a thumb on one answer at random."""
    rng = random.Random(seed + 7919)
    out = []
    for i, row in enumerate(rows):
        if rng.random() >= rate:
            continue
        side = rng.randrange(2)
        up = sample_rating(row.utilities[side], neutral, noise, rng) == "up"
        prompt = (ChatMessage(role="user", content=row.prompt),)
        out.append(Rating(f"pair-{i}", prompt, row.texts[side], up))
    return out


def _best(row: Scored) -> int:
    return 0 if row.utilities[0] >= row.utilities[1] else 1


def run_one(
    model_dir: Path,
    train_rows: list[Scored],
    eval_rows: list[Scored],
    recipe: dict[str, Any],
    args: argparse.Namespace,
    seed: int,
    neutral: float,
    keep: Path | None = None,
) -> dict[str, Any]:
    votes = noisy_votes(train_rows, args.noise, seed)
    thumbs = noisy_thumbs(train_rows, args.thumbs_rate, neutral, args.noise, seed)
    config = RewardConfig(**{"eval_fraction": 0.0, "seed": seed, "max_length": 512} | recipe)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_reward_model(model_dir, votes, config, Path(tmp), ratings=thumbs)
        model = RewardModel.load(model_dir, result.adapter_dir)
        prompts = [(ChatMessage(role="user", content=r.prompt),) for r in eval_rows]
        scores_a = model.score(prompts, [r.texts[0] for r in eval_rows]).tolist()
        scores_b = model.score(prompts, [r.texts[1] for r in eval_rows]).tolist()
        if keep is not None:  # for bench/ppo_check.py
            shutil.copytree(result.adapter_dir, keep, dirs_exist_ok=True)
    truth = truth_accuracy(
        list(zip(scores_a, scores_b, strict=True)), [r.utilities for r in eval_rows]
    )
    vote_agreement = sum(
        1.0 for v, r in zip(votes, train_rows, strict=True) if v.chosen == r.texts[_best(r)]
    ) / len(votes)
    return {
        "truth": truth,
        "seconds": time.monotonic() - started,
        "train_accuracy": result.metrics.get("accuracy"),
        "vote_agreement": vote_agreement,
        "thumbs": len(thumbs),
    }


def _slug(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _sweep(args: argparse.Namespace) -> None:
    from learner.modeling import load_tokenizer

    model_dir = resolve_model_dir(args.model_dir)
    tokenizer = load_tokenizer(model_dir)
    # Pairs of --held-out files are held out whatever their split says.
    pool = load_pool(args.pool) + [
        dataclasses.replace(p, split="eval") for p in load_pool(args.held_out)
    ]
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.rm_sweep "
        f"{command_line()}`",
        f"Machine: {machine()}.",
        "",
        "| preference | max tokens | both cut | label ceiling | recipe | seed | votes | thumbs "
        "| vote agrees | RM accuracy vs truth [95%] | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.preferences.split(","):
        fn = load_preference(name)
        for max_tokens in args.max_tokens:
            rows = score_pool(pool, tokenizer, fn, max_tokens)
            train = [r for r, p in zip(rows, pool, strict=True) if p.split == "train"]
            train = train[: args.comparisons]
            held = [r for r, p in zip(rows, pool, strict=True) if p.split == "eval"]
            ceiling = label_ceiling([r.utilities for r in train], args.noise)
            cut = sum(r.both_cut for r in train) / len(train)
            for recipe in args.recipes.split(","):
                for seed in args.seeds:
                    keep = (
                        Path(args.keep) / f"{_slug(name)}-{max_tokens}-{recipe}-{seed}"
                        if args.keep
                        else None
                    )
                    out = run_one(
                        model_dir, train, held, RECIPES[recipe], args, seed, neutral_for(fn), keep
                    )
                    line = (
                        f"| {name} | {max_tokens} | {cut:.2f} | {ceiling.value:.3f} | {recipe} "
                        f"| {seed} | {len(train)} | {out['thumbs']} | {out['vote_agreement']:.3f} "
                        f"| {out['truth']} | {out['seconds']:.0f} |"
                    )
                    lines.append(line)
                    print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as sink:
            sink.write("\n".join(lines) + "\n\n")


def _score(args: argparse.Namespace) -> None:
    """A reward model trained elsewhere (a run's ``learner/reward/vN``) against the noise-free
    ordering of pool pairs it never trained on: its accuracy vs truth with a 95% interval."""
    from learner.modeling import load_tokenizer

    model_dir = resolve_model_dir(args.model_dir)
    tokenizer = load_tokenizer(model_dir)
    pool = load_pool(args.pool)
    model = RewardModel.load(model_dir, args.reward_adapter)
    # The scores depend on the texts only: one pass serves every preference.
    rows = score_pool(pool, tokenizer, load_preference("concise"), args.max_tokens)
    prompts = [(ChatMessage(role="user", content=r.prompt),) for r in rows]
    started = time.monotonic()
    scores_a = model.score(prompts, [r.texts[0] for r in rows]).tolist()
    scores_b = model.score(prompts, [r.texts[1] for r in rows]).tolist()
    seconds = time.monotonic() - started
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.rm_sweep "
        f"{command_line()}`",
        f"Machine: {machine()}. {len(rows)} pairs scored in {seconds:.0f} s.",
        "",
        "| reward model | preference | max tokens | pairs | RM accuracy vs truth [95%] |",
        "|---|---|---|---|---|",
    ]
    scores = list(zip(scores_a, scores_b, strict=True))
    for name in args.preferences.split(","):
        utilities = [
            r.utilities for r in score_pool(pool, tokenizer, load_preference(name), args.max_tokens)
        ]
        truth = truth_accuracy(scores, utilities)
        lines.append(
            f"| {args.label or args.reward_adapter.name} | {name} | {args.max_tokens} "
            f"| {len(rows)} | {truth} |"
        )
    print("\n".join(lines), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as sink:
            sink.write("\n".join(lines) + "\n\n")


def _labels(args: argparse.Namespace) -> None:
    """Label ceiling and how many pairs are both cut off, per preference and answer limit."""
    from learner.modeling import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_dir(args.model_dir))
    pool = [p for p in load_pool(args.pool) if p.split == "train"]
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.rm_sweep "
        f"{command_line()}` ({len(pool)} base-model answer pairs, noise {args.noise})",
        "",
        "| preference | max tokens | pairs both cut off | pairs of equal utility | label ceiling |",
        "|---|---|---|---|---|",
    ]
    for name in args.preferences.split(","):
        fn = load_preference(name)
        for max_tokens in args.max_tokens:
            rows = score_pool(pool, tokenizer, fn, max_tokens)
            ceiling = label_ceiling([r.utilities for r in rows], args.noise)
            cut = sum(r.both_cut for r in rows) / len(rows)
            equal = 1 - ceiling.n / len(rows)
            lines.append(f"| {name} | {max_tokens} | {cut:.2f} | {equal:.2f} | {ceiling} |")
            print(lines[-1], flush=True)
    if args.out:
        with args.out.open("a") as sink:
            sink.write("\n".join(lines) + "\n\n")


def _pairing(args: argparse.Namespace) -> None:
    """Signal per vote with uniform pairing (every pair asked) and informative pairing
    (``serving.pair_sampling``: pairs shown with a probability that rises with the rank of the
    answers' difference among the pairs), from the same base-model pairs: the expected
    agreement of one noisy vote with the noise-free ordering over the pairs asked, and its
    margin over chance (2a - 1, the signal a vote carries; pairs of equal utility carry
    none)."""
    from learner.modeling import load_tokenizer
    from serving.pair_sampling import answer_difference, show_probability

    tokenizer = load_tokenizer(resolve_model_dir(args.model_dir))
    pool = [p for p in load_pool(args.pool) if p.split == "train"]
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.rm_sweep "
        f"{command_line()}` ({len(pool)} base-model answer pairs, noise {args.noise}, "
        f"max tokens {args.max_tokens}).",
        "",
        "| preference | pairing | share of pairs asked | vote agrees with truth | signal per vote "
        "(2a - 1) | votes for the signal of 100 uniform votes |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.preferences.split(","):
        rows = score_pool(pool, tokenizer, load_preference(name), args.max_tokens)
        agree = [expected_agreement(r.utilities, args.noise) for r in rows]
        diffs = [answer_difference(r.texts) for r in rows]
        ranks = _ranks(diffs)
        uniform_signal = sum(2 * a - 1 for a in agree) / len(agree)
        for floor in args.floors:
            shown = [show_probability(rank, floor) for rank in ranks]
            mass = sum(shown)
            a_mean = sum(p * a for p, a in zip(shown, agree, strict=True)) / mass
            signal = 2 * a_mean - 1
            label = "uniform" if floor >= 1 else f"informative (floor {floor:g})"
            votes = 100 * uniform_signal / signal if signal > 0 else float("inf")
            lines.append(
                f"| {name} | {label} | {mass / len(rows):.2f} | {a_mean:.3f} | {signal:.3f} | "
                f"{votes:.0f} |"
            )
            print(lines[-1], flush=True)
    if args.out:
        with args.out.open("a") as sink:
            sink.write("\n".join(lines) + "\n\n")


def _ranks(values: list[float]) -> list[float]:
    """Each value's rank among all of them in [0, 1] (serving ranks among recent pairs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for position, i in enumerate(order):
        ranks[i] = position / max(len(values) - 1, 1)
    return ranks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="sample the answer pool once")
    g.add_argument("--out", type=Path, default=REPO / "var" / "rm_sweep" / "pool.jsonl")
    g.add_argument("--model-dir", default="embedded")
    g.add_argument("--train-copies", type=int, default=2, help="pairs per train prompt")
    g.add_argument("--eval-copies", type=int, default=3, help="pairs per eval prompt")
    g.add_argument("--max-new-tokens", type=int, default=160)
    g.add_argument("--batch-size", type=int, default=32, help="pairs per generate call")
    g.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("sweep", help="train reward models on noisy votes, score against truth")
    s.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        default=[REPO / "var" / "rm_sweep" / "pool.jsonl"],
        help="pool files (their lines say train or eval)",
    )
    s.add_argument(
        "--held-out",
        type=Path,
        nargs="*",
        default=[],
        help="pool files whose pairs are all held out, whatever their split",
    )
    s.add_argument("--model-dir", default="embedded")
    s.add_argument("--preferences", default="concise,friendly,format")
    s.add_argument("--recipes", default="baseline,zero-head")
    s.add_argument("--max-tokens", type=int, nargs="+", default=[160])
    s.add_argument("--comparisons", type=int, default=500)
    s.add_argument("--noise", type=float, default=1.0)
    s.add_argument("--seeds", type=int, nargs="+", default=[0])
    s.add_argument(
        "--thumbs-rate", type=float, default=0.0, help="share of pairs with a thumb (ratings)"
    )
    s.add_argument("--out", type=Path, default=None, help="append the table to this file")
    s.add_argument(
        "--keep",
        default=str(REPO / "var" / "rm_sweep" / "models"),
        help="save each trained reward model under this folder ('' = do not keep)",
    )
    fs = sub.add_parser("from-store", help="a run's shown pairs (learner store) as pool lines")
    fs.add_argument("--store", type=Path, required=True, help="the learner's store.sqlite")
    fs.add_argument("--out", type=Path, required=True)
    fs.add_argument("--model-dir", default="embedded")
    fs.add_argument("--max-tokens", type=int, default=128, help="the run's answer limit")
    fs.add_argument("--limit", type=int, default=0, help="first N pairs (0 = all)")
    sc = sub.add_parser(
        "score", help="a trained reward model vs the truth of pool pairs it never trained on"
    )
    sc.add_argument("--reward-adapter", type=Path, required=True, help="e.g. RUN/learner/reward/v1")
    sc.add_argument("--label", default="", help="its name in the table (default: the dir name)")
    sc.add_argument("--pool", type=Path, nargs="+", required=True)
    sc.add_argument("--model-dir", default="embedded")
    sc.add_argument("--preferences", default="concise,friendly,format")
    sc.add_argument("--max-tokens", type=int, default=128)
    sc.add_argument("--out", type=Path, default=None, help="append the table to this file")
    lab = sub.add_parser("labels", help="label ceilings per preference and answer limit")
    lab.add_argument("--pool", type=Path, default=REPO / "var" / "rm_sweep" / "pool.jsonl")
    lab.add_argument("--model-dir", default="embedded")
    lab.add_argument("--preferences", default="concise,friendly,format")
    lab.add_argument("--max-tokens", type=int, nargs="+", default=[64, 96, 128])
    lab.add_argument("--noise", type=float, default=1.0)
    lab.add_argument("--out", type=Path, default=None)
    pair = sub.add_parser("pairing", help="signal per vote: uniform vs informative pairing")
    pair.add_argument("--pool", type=Path, default=REPO / "var" / "rm_sweep" / "pool.jsonl")
    pair.add_argument("--model-dir", default="embedded")
    pair.add_argument("--preferences", default="concise,friendly,format")
    pair.add_argument("--max-tokens", type=int, default=128)
    pair.add_argument("--noise", type=float, default=1.0)
    pair.add_argument("--floors", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.05])
    pair.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    commands = {
        "generate": _generate,
        "from-store": _from_store,
        "sweep": _sweep,
        "score": _score,
        "labels": _labels,
        "pairing": _pairing,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
