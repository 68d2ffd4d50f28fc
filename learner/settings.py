"""Learner settings: one pydantic-settings class, env prefix ``LEARNER_``, validated at start-up."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings_checks import BootstrapServers, ModelDir, TopicSettings
from learner.trainers.launched import fsdp_launcher_problem


class LearnerSettings(BaseSettings, TopicSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNER_", extra="forbid")

    model_dir: ModelDir = Field(
        "embedded", description="'embedded' (SmolLM2-135M) or a local model dir"
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="training/evaluation device: auto (CUDA when present), cpu, cuda[:N]",
    )
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="dtype of the frozen base weights in every stage (LoRA, heads, optimiser "
        "states and losses stay float32): auto = bfloat16 on a GPU that supports it and on a "
        "CPU with native bf16 (AVX-512 BF16 or AMX), float32 otherwise (learner.precision); a "
        "stage's LEARNER_*_CONFIG may override it",
    )
    kafka_bootstrap: BootstrapServers = Field("127.0.0.1:9092", description="host:port[,host:port]")
    data_dir: str = Field("var/learner", description="training store, checkpoints, reports")
    adapter_store: str = Field("var/adapters", description="adapter store: directory or fsspec URL")
    adapter_name: str = Field("policy", description="adapter family to train and publish")
    min_new_comparisons: int = Field(
        64, ge=1, description="start a cycle after this many new comparisons ..."
    )
    cycle_period_seconds: float = Field(
        3600.0,
        ge=0,
        description="... or after this long with at least one new comparison (0 = by count only)",
    )
    feedback_join_window_seconds: float = Field(
        3600.0, gt=0, description="how long feedback waits for its pair before it expires"
    )
    rm_min_accuracy: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="held-out accuracy floor (the confidence test below is what decides)",
    )
    rm_gate_confidence: float = Field(
        0.95,
        ge=0.0,
        lt=1.0,
        description="the reward model must beat chance on its held-out votes at this confidence "
        "(one-sided Wilcoxon signed-rank test of the held-out margins); 0 = point accuracy only",
    )
    rm_gate_uncertain: Literal["reject", "canary"] = Field(
        "canary",
        description="a reward model its held-out votes neither certify nor show worse than "
        "chance: 'canary' = train and evaluate on, and publish the policy as a guarded canary "
        "(needs canary on and eval_reward_model 'independent', else rejected); 'reject' = "
        "reject the cycle",
    )
    eval_reward_model: Literal["independent", "same"] = Field(
        "independent",
        description="'independent': evaluate with a second reward model PPO never optimised "
        "(trained with another seed; doubles the reward stage); 'same': the one PPO optimised",
    )
    min_reward_gain: float = Field(
        0.0, description="publish only if the held-out reward gain over the reference is > this"
    )
    # Nats per response (sum over its tokens). A visible change of style (shorter answers,
    # another tone) costs a few nats; 10 leaves room for that and still stops a policy that
    # drifted far from the reference (reward hacking, collapse). Tune per deployment.
    kl_budget: float = Field(
        10.0, gt=0, description="max mean KL(policy||reference) per response, in nats"
    )
    metrics_port: int = Field(9100, ge=0, le=65535, description="Prometheus port; 0 = off")
    seed: int = 0
    # --- service around the ML: ingestion, cycles, publishing, evaluation ---
    model_name: str = Field(
        "smollm2-135m-instruct",
        description="served model id: key of "
        "adapter.published and manifest model_name (= serving.model_name)",
    )
    poll_timeout_ms: int = Field(500, ge=10, description="Kafka poll timeout")
    max_poll_records: int = Field(500, ge=1, description="messages per poll / store transaction")
    idle_sleep_seconds: float = Field(1.0, ge=0, description="daemon sleep when nothing to do")
    sft_on_corrections: bool = Field(True, description="run SFT on new corrections each cycle")
    ppo_num_prompts: int = Field(64, ge=1, description="logged prompts sampled for PPO")
    ppo_comparisons_per_step: int = Field(
        32,
        ge=0,
        description="one PPO iteration per this many new comparisons, up to the configured "
        "num_steps (0: always num_steps)",
    )
    ppo_min_steps: int = Field(4, ge=1, description="PPO iterations of a cycle at least")
    # The evaluation's KL ran 1.3x the last rollouts' in a concise acceptance cycle (10.9 vs
    # 8.4 nats: other prompts, a moved policy); 0.6 leaves that room under the budget.
    ppo_kl_stop_fraction: float = Field(
        0.6,
        ge=0,
        le=1,
        description="PPO stops once its rollouts reach this share of kl_budget (0 = off); "
        "'kl_stop' in ppo_config overrides it",
    )
    rollout_engine: Literal["auto", "decode_loop", "generate", "vllm"] = Field(
        "auto",
        description="what decodes PPO's rollouts: decode_loop (the batch decoder serving uses), "
        "generate (Hugging Face), vllm (colocated on the GPU, one process) or auto (vllm on "
        "CUDA when installed, else decode_loop); 'rollout_engine' in ppo_config overrides it",
    )
    eval_num_prompts: int = Field(16, ge=1, description="held-out prompts for evaluation")
    eval_prompt_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of logged prompts kept out of PPO for evaluation (stable hash split)",
    )
    sanity_prompts: list[str] = Field(
        default_factory=lambda: ["What is 2+2?", "Say hello.", "Name a colour."],
        description="prompts whose answers must pass the sanity checks before publishing",
    )
    publish_to_kafka: bool = Field(True, description="produce adapter.published after publish")
    # --- canary: the users' votes decide (learner.canary) ---
    canary: bool = Field(
        False,
        description="publish each new version as a canary beside the serving one; promote or "
        "roll it back by the users' canary-vs-serving votes (sequential test)",
    )
    canary_alpha: float = Field(
        0.05, gt=0, lt=1, description="error rate of the anytime-valid win-rate interval"
    )
    canary_margin: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="promote when the win rate's lower bound is above 0.5 - this (0: better)",
    )
    canary_min_votes: int = Field(20, ge=1, description="decisive votes before any decision")
    canary_max_votes: int = Field(
        1000, ge=1, description="undecided after this many decisive votes: roll back"
    )
    canary_guarded_max_votes: int = Field(
        200,
        ge=1,
        description="a guarded canary (its reward model was uncertain) undecided after this "
        "many decisive votes: roll back (at least canary_min_votes)",
    )
    canary_max_seconds: float = Field(
        86400.0, gt=0, description="undecided after this long: roll back"
    )
    canary_guard_min_answers: int = Field(
        20, ge=1, description="canary answers before the guard may act"
    )
    canary_guard_max_empty_share: float = Field(
        0.2, gt=0, le=1, description="roll back at once above this share of empty canary answers"
    )
    canary_guard_max_down_excess: float = Field(
        0.25,
        gt=0,
        le=1,
        description="roll back at once when the canary's thumbs-down rate exceeds the serving "
        "version's by more than this (10 thumbs each at least)",
    )
    trainers: Literal["real", "fake"] = Field(
        "real", description="'fake' = tiny stand-in trainers (tests of the service only)"
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch threads of training and evaluation; 0 = automatic: OMP_NUM_THREADS "
        "if set, else the CPUs this process may use (affinity, cgroup quota), rounded up and "
        "shared among a launched stage's local processes (common.cpu_budget)",
    )
    train_launcher: str = Field(
        "",
        description="run each training stage as '<this> -m learner.trainers.stage_worker REQ', "
        "e.g. 'accelerate launch --multi_gpu --num_processes 4' (data parallel); '' = in-process",
    )
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="how a launched stage's processes share the model: 'ddp' = each holds all "
        "of it (plain data parallel); 'fsdp' = the base, adapters and optimiser states are "
        "sharded over them (torch FSDP, learner/trainers/accelerate/fsdp.yaml); needs "
        "train_launcher to be an 'accelerate launch' without --multi_gpu",
    )
    reward_config: dict[str, Any] = Field(
        default_factory=dict, description="RewardConfig field overrides (JSON in env)"
    )
    ppo_config: dict[str, Any] = Field(default_factory=dict, description="PPOConfig overrides")
    sft_config: dict[str, Any] = Field(default_factory=dict, description="SFTConfig overrides")
    eval_config: dict[str, Any] = Field(default_factory=dict, description="EvalConfig overrides")

    @model_validator(mode="after")
    def _guarded_cap_allows_a_decision(self) -> LearnerSettings:
        if self.canary_guarded_max_votes < self.canary_min_votes:
            raise ValueError(
                f"canary_guarded_max_votes ({self.canary_guarded_max_votes}) must be at least "
                f"canary_min_votes ({self.canary_min_votes}): below it a guarded canary could "
                "only be rolled back"
            )
        return self

    @model_validator(mode="after")
    def _fsdp_needs_an_accelerate_launch(self) -> LearnerSettings:
        if self.distributed == "fsdp":
            problem = fsdp_launcher_problem(self.train_launcher)
            if problem:
                raise ValueError(problem)
        return self
