"""Does PPO turn a reward model learned from noisy votes into a better policy? Measured offline.

PPO (the learner's default recipe, or overrides) optimises the policy LoRA against a reward
model trained on simulated users' noisy votes (``bench/rm_sweep.py`` keeps them), on the
shipped train prompts. Then the policy and the base answer every held-out eval prompt with the
same random draws, and the users' *noise-free* preference judges each pair: the win rate of
the policy over the base with its Wilson 95 % interval, the mean words, how many answers ended
by themselves. Per-iteration reward and KL come from PPO's own log.

Usage::

    .venv/bin/python -m bench.ppo_check --reward var/rm_sweep/models/concise-128-zero-head-top8-0 \
        --preference concise --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import REPO
from bench.acceptance import ACCEPTANCE_MAX_TOKENS
from bench.bench_all import command_line, machine
from common.embedded_model import resolve_model_dir
from common.stats import wilson_interval
from learner.modeling import load_base_model, load_tokenizer, set_seed
from learner.ppo.config import PPOConfig
from learner.ppo.rollout import sample
from learner.ppo.train import run_ppo
from loop.preferences import load_preference, word_count
from loop.prompts import load_prompts
from loop.user_options import add_max_tokens_option
from schemas.events import ChatMessage


def answers(
    model_dir: Path, adapter: Path | None, prompts: list[Any], max_tokens: int, seed: int
) -> tuple[list[str], list[bool]]:
    """One sampled answer per prompt at temperature 1.0, batch by batch with fixed seeds."""
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_base_model(model_dir)
    if adapter is None:  # a B = 0 LoRA is the base, through the same code path
        model = get_peft_model(base, LoraConfig(r=1, target_modules="all-linear"))
    else:
        model = PeftModel.from_pretrained(base, str(adapter))
    tokenizer = load_tokenizer(model_dir)
    texts: list[str] = []
    ended: list[bool] = []
    for start in range(0, len(prompts), 32):
        set_seed(seed + start)
        rollout = sample(
            model.eval(), tokenizer, prompts[start : start + 32], 256, max_tokens, 1.0, 1.0
        )
        texts += rollout.texts
        ended += rollout.has_eos.tolist()
    return texts, ended


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--reward", type=Path, required=True, help="reward-model adapter directory")
    p.add_argument("--preference", default="concise")
    p.add_argument("--model-dir", default="embedded")
    add_max_tokens_option(
        p, ACCEPTANCE_MAX_TOKENS, why="the acceptance run's answer length, which this predicts"
    )
    p.add_argument("--ppo-config", default="{}", help="JSON PPOConfig overrides")
    p.add_argument("--samples", type=int, default=2, help="answers per eval prompt and model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=REPO / "var" / "ppo_check")
    p.add_argument("--out", type=Path, default=None, help="append the report to this file")
    args = p.parse_args()
    model_dir = resolve_model_dir(args.model_dir)
    fn = load_preference(args.preference)
    overrides = json.loads(args.ppo_config)
    config = PPOConfig(**{"max_new_tokens": args.max_tokens, "seed": args.seed} | overrides)
    train: list[tuple[ChatMessage, ...]] = [
        (ChatMessage(role="user", content=q.prompt),) for q in load_prompts("train")
    ]
    started = time.monotonic()
    result = run_ppo(model_dir, args.reward, train, config, args.work / "ppo")
    ppo_seconds = time.monotonic() - started
    held = [q.prompt for q in load_prompts("eval") for _ in range(args.samples)]
    prompts = [(ChatMessage(role="user", content=q),) for q in held]
    policy, policy_end = answers(model_dir, result.adapter_dir, prompts, args.max_tokens, 1)
    base, base_end = answers(model_dir, None, prompts, args.max_tokens, 1)
    wins = 0.0
    for q, a, b in zip(held, policy, base, strict=True):
        best = fn(q, [a, b]).best()
        wins += 0.5 if best is None else float(best == 0)
    low, high = wilson_interval(wins, len(held))
    hist = result.history
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python -m bench.ppo_check "
        f"{command_line()}`; PPO {ppo_seconds / 60:.1f} min.",
        f"Machine: {machine()}.",
        "",
        f"Policy vs base on {len(held)} held-out answers judged by the noise-free "
        f"`{args.preference}`: win rate **{wins / len(held):.3f}** [{low:.3f}, {high:.3f}]; "
        f"mean words {_mean([word_count(t) for t in policy]):.1f} vs "
        f"{_mean([word_count(t) for t in base]):.1f}; ended by themselves "
        f"{_mean(policy_end):.2f} vs {_mean(base_end):.2f}.",
        "",
        "| iteration | score (std units) | KL nats | length | EOS share | s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {int(h['step'])} | {h['objective/scores']:+.3f} | {h['objective/kl']:.2f} "
        f"| {h['response/length']:.0f} | {h['response/eos_fraction']:.2f} | {h['time/step']:.0f} |"
        for h in hist
    ]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as sink:
            sink.write(text + "\n")


def _mean(values: list[Any]) -> float:
    return sum(float(v) for v in values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
