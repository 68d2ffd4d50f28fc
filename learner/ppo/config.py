"""PPO options (TRL ``PPOConfig`` style: every field has a help string)."""

from __future__ import annotations

from dataclasses import dataclass

from learner.modeling import TrainOptions, option

# What decodes the rollouts (learner.ppo.rollout_engines).
ROLLOUT_ENGINES = ("auto", "decode_loop", "generate", "vllm")


def check_rollout_engine(name: str) -> None:
    if name not in ROLLOUT_ENGINES:
        choices = ", ".join(ROLLOUT_ENGINES)
        raise ValueError(f"rollout_engine must be one of {choices}, not {name!r}")


@dataclass
class PPOConfig(TrainOptions):
    # LoRA policies tolerate larger steps than full fine-tuning (TRL's 3e-6). With RLOO on
    # standardised rewards, one reward model learned from 500 noisy `concise` votes, the same
    # script (bench/ppo_check.py, 16 iterations): lr 1e-4 won 0.772 [0.687, 0.839] against the
    # base at KL 2.6 nats, lr 3e-4 won 0.875 [0.803, 0.923] at KL 6.6 (budget 10); in an
    # acceptance run 1e-4 never moved the policy (KL 0.49) with that reward model.
    learning_rate: float = option(3e-4, "AdamW learning rate for the policy LoRA.")
    num_steps: int = option(16, "PPO iterations (rollout + update) per call.")
    # The learner's KL gate rejects a policy past its budget however good it is: at lr 3e-4 one
    # concise cycle reached 10.9 nats at evaluation (8.4 in its last rollouts) and was thrown
    # away. Stopping when the rollouts reach a share of the budget keeps the last policy that
    # was inside it (the idea of PPO's KL early stopping, Schulman et al. 2017, applied to the
    # KL to the reference). The learner sets it from LEARNER_PPO_KL_STOP_FRACTION.
    kl_stop: float | None = option(
        None,
        "Stop before the update of an iteration (not the first) whose rollouts' mean KL to the "
        "reference per answer reached this many nats, undoing the update before it when the "
        "rollouts before that were under the stop; None = every iteration runs.",
    )
    batch_size: int = option(
        8, "Prompts per rollout (per process under accelerate); rows = this * samples_per_prompt."
    )
    samples_per_prompt: int = option(
        2, "Responses sampled per prompt (>= 2 for the RLOO baseline; GAE accepts 1)."
    )
    # RLOO compares each answer with the other answers to the same prompt, which is what the
    # users' votes (and so the reward model) measure; GAE needs a critic that starts knowing
    # nothing each cycle, and with a few hundred rollouts per cycle its noise dominated.
    advantage_estimator: str = option(
        "rloo", "'rloo' (leave-one-out baseline, no critic) or 'gae' (value head + GAE)."
    )
    mini_batch_size: int = option(
        8,
        "Rollouts (rows) per micro-batch of the update; an optimiser step takes "
        "gradient_accumulation_steps of them.",
    )
    ppo_epochs: int = option(2, "Passes over each rollout batch.")
    max_prompt_length: int = option(256, "Prompts are cut from the left to this many tokens.")
    # Serving's default answer length (SERVING_DEFAULT_MAX_TOKENS): the policy is optimised on
    # answers as long as the ones users see and vote on.
    max_new_tokens: int = option(128, "Response length limit.")
    # The serving default: the policy is optimised on the answers users will actually see, and
    # the reward model was trained on answers sampled at this temperature.
    temperature: float = option(1.0, "Sampling temperature; log-probs use the same scaling.")
    top_p: float = option(1.0, "Nucleus sampling; 1.0 keeps the sampler's log-probs exact.")
    # Rewards reach PPO in standard units (the reward model's training-answer std = 1), so beta
    # is "reward standard deviations per nat".
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
    vf_coef: float = option(0.1, "Weight of the value loss (GAE only).")
    value_learning_rate: float = option(
        1e-3, "AdamW learning rate of the value head (the zero-initialised head must move fast)."
    )
    value_warmup_steps: int = option(
        2, "GAE only: first iterations train the value head alone, before any policy update."
    )
    whiten_rewards: bool = option(False, "Whiten per-token rewards before GAE.")
    # Off by default: a fixed penalty is a length prior of its own, against any preference
    # that wants longer answers, and at 1.0 it outweighed an unnormalised reward model.
    missing_eos_penalty: float | None = option(
        None,
        "Subtracted from the (standardised) score of responses cut by max_new_tokens; None = off.",
    )
    # The batch decoder ran a default PPO iteration's rollouts 1.2x as fast as ``generate`` on
    # 2 CPU cores (1.3x on identical greedy tokens; bench/results/rollout_engine.md): at 16
    # rows a step is mostly reading the weights. vLLM colocated with training
    # is TRL's ``use_vllm`` colocate mode
    # (https://huggingface.co/docs/trl/main/en/vllm_integration); it holds its own copy of the
    # base on the GPU, so it is chosen on CUDA only.
    rollout_engine: str = option(
        "auto",
        "What decodes the rollouts: 'decode_loop' (the batch decoder serving uses, on the "
        "policy itself), 'generate' (Hugging Face generate), 'vllm' (a colocated vLLM instance, "
        "one process), or 'auto' (vllm on CUDA when installed, else decode_loop).",
    )
    # Small: training keeps its model, optimiser and activations on the same GPU (TRL's
    # colocate default is 0.3 too).
    vllm_gpu_memory_utilization: float = option(
        0.3, "rollout_engine 'vllm': share of the GPU's memory vLLM may take (weights + KV cache)."
    )
    forward_batch_size: int = option(8, "Rows per no-grad forward when scoring a rollout.")
    reward_batch_size: int = option(16, "Rows per reward-model batch.")
    log_every: int = option(1, "Log metrics every this many PPO iterations.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rollout_engine(self.rollout_engine)
        if not 0.0 < self.vllm_gpu_memory_utilization < 1.0:
            raise ValueError(
                "vllm_gpu_memory_utilization must be between 0 and 1, not "
                f"{self.vllm_gpu_memory_utilization}"
            )
