"""Reward-model training options (TRL ``RewardConfig`` style: every field has a help string)."""

from __future__ import annotations

from dataclasses import dataclass

from learner.modeling import TrainOptions, option


@dataclass
class RewardConfig(TrainOptions):
    num_epochs: int = option(1, "Passes over the training comparisons.")
    # The last 8 of SmolLM2-135M's 30 layers: the backward pass stops there (about twice as fast
    # on a CPU) and the sweep's reward models were this recipe (bench/results/rm_sweep.md).
    lora_layers: int = option(
        8, "LoRA only on the last N decoder layers; 0 (or N >= the model's layers) = every layer."
    )
    batch_size: int = option(8, "Comparisons per micro-batch (per process under accelerate).")
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
    head_learning_rate: float | None = option(
        None, "AdamW learning rate of the score head (None: learning_rate, as the body)."
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
    # learner.rm.model explains both. Full reward models from the same 500 `concise` votes,
    # scored against the noise-free ordering of 723 pairs they never saw
    # (bench/results/rm_sweep.md): 'mean+sum' 0.848, 'last' 0.722; frozen-body probes favour
    # 'mean+sum' on `friendly` and `format` too.
    pooling: str = option(
        "mean+sum",
        "Head input: 'last' (the last token's state) or 'mean+sum' (mean and scaled sum of the "
        "answer tokens' states).",
    )
    # learner.rm.reliability: bench/results/user_reliability.md measures it with a share of
    # random voters, and with none (where it must not cost accuracy).
    user_reliability: bool = option(
        True,
        "Weight each user's comparisons by their agreement with the reward model's "
        "prequential predictions (random voters down to reliability_floor).",
    )
    reliability_floor: float = option(0.1, "Lowest weight a user's comparisons can get.")
    reliability_prior_votes: float = option(
        10.0,
        "Least shrinkage of a user's agreement towards the pooled one, as pseudo-votes (the "
        "empirical-Bayes shrinkage is used when it is stronger).",
    )
    reliability_warmup: float = option(
        0.25,
        "Share of the first epoch's comparison steps trained unweighted before the "
        "reliability weights apply (the model must first beat chance).",
    )
    log_every: int = option(10, "Log progress every this many optimiser steps.")
