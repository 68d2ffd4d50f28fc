"""Reward-model training options (TRL ``RewardConfig`` style: every field has a help string)."""

from __future__ import annotations

from dataclasses import dataclass

from learner.modeling import TrainOptions, option


@dataclass
class RewardConfig(TrainOptions):
    num_epochs: int = option(1, "Passes over the training comparisons.")
    batch_size: int = option(8, "Comparisons per optimiser step (per process under accelerate).")
    # 20 %: the learner's gate tests held-out accuracy against chance, and its power grows with
    # the number of held-out votes (see learner.gates.reward_gate).
    eval_fraction: float = option(
        0.2, "Share of pair_ids held out for evaluation (split by pair, never by comparison)."
    )
    # A small store times a small fraction rounds to zero held-out pairs: keep at least this
    # many when eval_fraction > 0 and there are at least twice as many pairs in all.
    min_eval_pairs: int = option(1, "Minimum held-out pairs when the store has enough pairs.")
    eval_batch_size: int = option(16, "Comparisons per scoring batch during evaluation.")
    center_rewards_coefficient: float | None = option(
        None,
        "If set, adds coef * mean((r_c + r_r)^2) to the loss to keep rewards centred "
        "(Eisenstein et al. 2023), as TRL's option of the same name.",
    )
    lr_scheduler: str = option("constant", "'constant' or 'cosine' (decays to 10 %) after warm-up.")
    warmup_ratio: float = option(0.0, "Share of the optimiser steps with a linear LR warm-up.")
    rating_weight: float = option(
        0.5, "Weight of the thumbs / both-bad rating loss against the pairwise loss; 0 = unused."
    )
    norm_sample: int = option(
        256, "Training comparisons re-scored after training for the reward statistics."
    )
    head_init: str = option(
        "zero", "Score head start: 'zero' (every reward 0 before training) or 'normal'."
    )
    log_every: int = option(10, "Log progress every this many optimiser steps.")
