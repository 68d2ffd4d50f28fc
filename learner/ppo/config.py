"""PPO options (TRL ``PPOConfig`` style: every field has a help string)."""

from __future__ import annotations

from dataclasses import dataclass

from learner.modeling import TrainOptions, option


@dataclass
class PPOConfig(TrainOptions):
    # LoRA policies tolerate larger steps than full fine-tuning (TRL's 3e-6); 2e-5 kept the KL
    # within budget over a cycle in our runs while still moving the reward.
    learning_rate: float = option(2e-5, "AdamW learning rate for the policy LoRA + value head.")
    num_steps: int = option(16, "PPO iterations (rollout + update) per call.")
    batch_size: int = option(16, "Prompts per rollout (per process under accelerate).")
    mini_batch_size: int = option(4, "Rollouts per optimiser step during the update.")
    ppo_epochs: int = option(2, "Passes over each rollout batch.")
    max_prompt_length: int = option(256, "Prompts are cut from the left to this many tokens.")
    max_new_tokens: int = option(64, "Response length limit.")
    temperature: float = option(0.7, "Sampling temperature; log-probs use the same scaling.")
    top_p: float = option(1.0, "Nucleus sampling; 1.0 keeps the sampler's log-probs exact.")
    kl_coef: float = option(0.05, "KL penalty coefficient beta (initial value if adaptive).")
    kl_estimator: str = option("k1", "'k1' (-log r) or 'k3' ((r - 1) - log r) per-token KL.")
    adaptive_kl: bool = option(False, "Steer beta towards kl_target (Ziegler et al. 2019).")
    kl_target: float = option(0.1, "Target mean KL per response for the adaptive controller.")
    kl_horizon: int = option(10000, "Adaptive controller horizon in samples.")
    gamma: float = option(1.0, "Discount; 1.0 because the only non-KL reward is at the end.")
    lam: float = option(0.95, "GAE lambda.")
    clip_range: float = option(0.2, "Policy ratio clip epsilon.")
    clip_range_value: float = option(0.2, "Value clip around the rollout values.")
    # The value loss's gradient also reaches the shared LoRA; a small coefficient keeps the
    # critic from dominating the policy's features.
    vf_coef: float = option(0.1, "Weight of the value loss.")
    whiten_rewards: bool = option(False, "Whiten per-token rewards before GAE.")
    missing_eos_penalty: float | None = option(
        1.0, "Subtracted from the score of responses cut by max_new_tokens (no EOS); None = off."
    )
    forward_batch_size: int = option(8, "Rows per no-grad forward when scoring a rollout.")
    reward_batch_size: int = option(16, "Rows per reward-model batch.")
    log_every: int = option(1, "Log metrics every this many PPO iterations.")
