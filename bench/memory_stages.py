"""Per-stage memory of the learner (SFT, reward model, PPO, evaluation) for one model config:
weights, LoRA and heads, gradients, optimiser states and activations, per process (every batch
size of the learner is per process; under DDP that is per GPU).

Shapes and batch sizes are the stage configs' defaults (learner/sft/config.py,
learner/rm/config.py, learner/ppo/config.py, learner/evaluate.py ``EvalConfig``). Two layouts:

- ``one base``: what the learner builds. Every stage holds one frozen base per process; PPO
  and the evaluation put the policy, the reference (adapters off) and the reward model on it
  as PEFT adapters (learner/adapters.py; ``RewardModel.attach`` in learner/ppo/train.py and
  learner/evaluate.py).
- ``base per model``: for comparison, PPO and the evaluation loading a base for the policy
  and another for the reward model (``RewardModel.load``): two copies.

Per GPU under ``LEARNER_DISTRIBUTED=fsdp`` (``StagePlan.sharded``) follows learner/sharding.py:
the prepared model's states are sharded (on one base, the reward adapter with them; a reward
model on a base of its own would stay whole on each GPU), the evaluation is not launched.
The arithmetic is in ``bench.memory_estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.memory_estimate import (
    ModelShape,
    adam_bytes,
    built_lora_params,
    kv_cache_bytes,
    lora_layers,
    trained_activation_bytes,
)
from learner.evaluate import EvalConfig
from learner.modeling import TrainOptions
from learner.ppo.config import PPOConfig
from learner.rm.config import RewardConfig
from learner.sft.config import SFTConfig

FLOAT32 = 4
LAYOUTS = ("one base", "base per model")


@dataclass(frozen=True)
class PlanOptions:
    dtype_bytes: int = 2
    checkpointing: bool = False
    attention: str = "eager"
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True)
class StagePlan:
    stage: str
    layout: str
    bases: int
    weights: int  # base weights, all copies
    lora: int  # LoRA and head weights (float32), trained and frozen
    gradients: int
    optimiser: int
    activations: int  # at the largest phase
    phase: str  # which phase that is
    shapes: str  # rows x tokens of that phase
    # Under FSDP (learner/sharding.py): the part of weights + lora every GPU still holds whole
    # (PPO's frozen reward model, not prepared), the unsharded working set (the root unit and
    # two decoder layers), and whether the stage is launched at all (evaluation runs in the
    # daemon: one process, nothing sharded).
    replicated: int = 0
    working_set: int = 0
    launched: bool = True

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.gradients + self.optimiser + self.activations

    def sharded(self, gpus: int) -> int:
        """Per GPU under LEARNER_DISTRIBUTED=fsdp over ``gpus``: weights, LoRA, gradients and
        Adam states divided among them, except what stays whole on each; plus the units
        gathered whole while they compute."""
        if not self.launched:
            return self.total
        states = self.weights + self.lora + self.gradients + self.optimiser - self.replicated
        return -(-states // gpus) + self.replicated + self.working_set + self.activations


@dataclass(frozen=True)
class _Stage:
    name: str
    bases_per_model: int  # base copies when each model loads its own
    trained: int  # trainable parameters (LoRA + heads)
    frozen: int  # frozen adapter and head parameters
    phases: dict[str, tuple[int, str]]  # phase -> (activation bytes, shapes)


def plan(config: Any, base: int, options: PlanOptions) -> list[StagePlan]:
    """Every stage in both layouts; ``base`` is the base model's parameter count."""
    shape = ModelShape.of(config)
    working_set = fsdp_working_set(shape, base) * options.dtype_bytes
    out = []
    for stage in _stages(config, shape, options):
        phase, (activations, shapes) = max(stage.phases.items(), key=lambda item: item[1][0])
        for layout in LAYOUTS:
            bases = 1 if layout == "one base" else stage.bases_per_model
            # A second base (base per model) is the frozen reward model's, which FSDP leaves
            # whole; on one base the reward adapter is sharded with the policy's base.
            replicated = (bases - 1) * (base * options.dtype_bytes + stage.frozen * FLOAT32)
            out.append(
                StagePlan(
                    stage=stage.name,
                    layout=layout,
                    bases=bases,
                    weights=bases * base * options.dtype_bytes,
                    lora=(stage.trained + stage.frozen) * FLOAT32,
                    gradients=stage.trained * FLOAT32,
                    optimiser=adam_bytes(stage.trained, master_copy=False),
                    activations=activations,
                    phase=phase,
                    shapes=shapes,
                    replicated=replicated,
                    working_set=working_set,
                    launched=stage.name != "evaluation",
                )
            )
    return out


def fsdp_working_set(shape: ModelShape, base: int) -> int:
    """Base parameters FSDP holds unsharded at once: the root unit (embeddings, final norm, LM
    head; whole through each forward and backward) and two decoder layers (the one computing and
    the one prefetched)."""
    root = shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.hidden
    per_layer = (base - root) // shape.layers
    return root + 2 * per_layer


def _stages(config: Any, shape: ModelShape, o: PlanOptions) -> list[_Stage]:
    h, b = shape.hidden, o.dtype_bytes

    def trained(opts: TrainOptions, rows: int, seq: int) -> int:
        layers = lora_layers(shape, opts)
        return trained_activation_bytes(shape, layers, rows, seq, b, o.checkpointing, o.attention)

    def no_grad_layer(rows: int, seq: int) -> int:
        # A no-grad forward keeps one layer's activations alive at a time, and the output.
        return trained_activation_bytes(shape, 1, rows, seq, b, False, o.attention)

    def logits(rows: int, tokens: int) -> int:
        return rows * tokens * shape.vocab * (b + FLOAT32)

    sft_lora = built_lora_params(config, o.sft)
    rm_lora = built_lora_params(config, o.reward)
    rm_head = 2 * h + 1 + 1  # mean+sum pooling head (2H weights + bias) and the rating threshold
    if o.reward.pooling == "last":
        rm_head -= h
    policy_lora = built_lora_params(config, o.ppo)
    value_head = h + 1

    sft_rows, sft_seq = o.sft.batch_size, o.sft.max_length
    rm_rows, rm_seq = 2 * o.reward.batch_size, o.reward.max_length  # chosen + rejected rows
    ppo = o.ppo
    ppo_seq, answer = ppo.max_prompt_length + ppo.max_new_tokens, ppo.max_new_tokens
    rollouts = ppo.batch_size * ppo.samples_per_prompt
    ev = o.evaluation
    ev_seq, ev_rows = ev.max_prompt_length + ev.max_new_tokens, ev.batch_size

    return [
        _Stage(
            "SFT",
            1,
            sft_lora,
            0,
            {
                "train step": (
                    trained(o.sft, sft_rows, sft_seq) + logits(sft_rows, sft_seq),
                    f"{sft_rows} x {sft_seq}",
                )
            },
        ),
        _Stage(
            "reward model",
            1,
            rm_lora + rm_head,
            0,
            {
                "train step": (
                    trained(o.reward, rm_rows, rm_seq) + rm_rows * rm_seq * h * b,
                    f"{rm_rows} x {rm_seq}",
                )
            },
        ),
        _Stage(
            "PPO",
            2,
            policy_lora + value_head,
            rm_lora + rm_head,
            {
                "rollout sampling": (
                    kv_cache_bytes(shape, rollouts, ppo_seq, b) + logits(rollouts, 1),
                    f"{rollouts} x {ppo_seq}",
                ),
                "reward scoring": (
                    no_grad_layer(ppo.reward_batch_size, ppo_seq),
                    f"{ppo.reward_batch_size} x {ppo_seq}",
                ),
                "update step": (
                    trained(ppo, ppo.mini_batch_size, ppo_seq)
                    + logits(ppo.mini_batch_size, answer),
                    f"{ppo.mini_batch_size} x {ppo_seq}",
                ),
            },
        ),
        _Stage(
            "evaluation",
            2,
            0,
            policy_lora + value_head + rm_lora + rm_head,
            {
                "sampling": (
                    kv_cache_bytes(shape, ev_rows, ev_seq, b) + logits(ev_rows, 1),
                    f"{ev_rows} x {ev_seq}",
                ),
                # policy and reference log-probs of one batch side by side
                "KL forward": (
                    no_grad_layer(ev_rows, ev_seq) + 2 * logits(ev_rows, ev.max_new_tokens),
                    f"{ev_rows} x {ev_seq}",
                ),
            },
        ),
    ]
