"""Run by test_fsdp_launch.py: the reward-model, PPO and SFT stages on the same data, either as
one plain process or as every rank of an FSDP launch (``--config_file`` the learner's
fsdp.yaml).

The global batch is the same in both runs:

- reward model: one process takes batches of 4 comparisons (8 rating rows); each of 2 ranks
  takes 2 (4 rows), and accelerate hands rank r the r-th batch of the same shuffled order, so
  every optimiser step sees the same 4 comparisons, split over the ranks.
- PPO: every rank samples the prompts one process samples (greedy, so the same responses):
  the global batch is the one-process batch once per rank, whose mean loss and gradient are
  the one process's. (Splitting a PPO batch over ranks would not compare: advantages are
  whitened over each process's own rows, under DDP as under FSDP.)
- SFT: as the reward model, batches of 4 demonstrations or 2 per rank, all with the same
  completion (the loss is a mean over each process's completion tokens).

Each process writes what it saw: the stages' histories, and how many elements of the frozen
base it held after training (its shards under FSDP, everything as one process).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learner.data import Rating, SFTExample
from learner.ppo import train as ppo_train
from learner.ppo.config import PPOConfig
from learner.ppo.rollout import Rollout, SamplingConfig, sample
from learner.ppo.rollout_engines import RolloutEngine
from learner.rm import train as rm_train
from learner.rm.config import RewardConfig
from learner.sft import train as sft_train
from learner.sft.config import SFTConfig
from schemas.events import ChatMessage
from tests.learner.ml.helpers import PROMPTS, separable_comparisons, user

# float32 by default: one process and two shards then differ only in how float32 sums are
# split (test_fsdp_launch's tolerance); FSDP_BASE_DTYPE=bfloat16 runs a bf16 base beside float32
# LoRA, heads and the reward adapter (units of one dtype each: learner.sharding).
BASE_DTYPE = os.environ.get("FSDP_BASE_DTYPE", "float32")
GLOBAL_BATCH = 4  # comparisons or demonstrations per optimiser step, over all processes


def ratings(n: int) -> list[Rating]:
    """Thumbs on answers that say "four!" (up) or not (down), on pairs of their own."""
    return [
        Rating(f"rating-{i}", user(PROMPTS[i % len(PROMPTS)]), f"four! {i}", i % 2 == 0)
        for i in range(n)
    ]


def frozen_numel_recorder(seen: dict[str, int], stage: str, original: Any) -> Any:
    """``gathered_state`` that first counts the frozen elements this process holds."""

    def record(accelerator: Any, prepared: Any) -> Any:
        model = accelerator.unwrap_model(prepared)
        seen[stage] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        return original(accelerator, prepared)

    return record


def greedy_sample_as(
    config: SamplingConfig,
    peft_model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[ChatMessage]],
    engine: RolloutEngine | None = None,
) -> Rollout:
    """The stage's sampling (its rollout engine on the unwrapped policy), greedy."""
    return sample(
        peft_model,
        tokenizer,
        prompts,
        config.max_prompt_length,
        config.max_new_tokens,
        config.temperature,
        config.top_p,
        greedy=True,
        engine=engine or "auto",
    )


def one_process_prompts(prompts: Any, config: PPOConfig, rank: int, world: int) -> Any:
    return ORIGINAL_PROMPT_SAMPLER(prompts, config, 0, 1)


ORIGINAL_PROMPT_SAMPLER = ppo_train._prompt_sampler


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    frozen: dict[str, int] = {}
    rm_train.gathered_state = frozen_numel_recorder(frozen, "reward", rm_train.gathered_state)
    ppo_train.gathered_state = frozen_numel_recorder(frozen, "ppo", ppo_train.gathered_state)
    sft_train.gathered_state = frozen_numel_recorder(frozen, "sft", sft_train.gathered_state)
    ppo_train.sample_as = greedy_sample_as
    ppo_train._prompt_sampler = one_process_prompts
    reward = rm_train.train_reward_model(
        model_dir,
        separable_comparisons(10),  # 2 held out (eval_fraction 0.2), 8 trained: 2 steps
        RewardConfig(
            num_epochs=1,
            batch_size=GLOBAL_BATCH // world,
            learning_rate=5e-3,
            eval_fraction=0.2,
            user_reliability=False,
            base_dtype=BASE_DTYPE,
        ),
        out / "reward",
        ratings=ratings(8),  # one step of 8 rows: the rating threshold trains too
    )
    ppo = ppo_train.run_ppo(
        model_dir,
        reward.adapter_dir,
        [user(p) for p in PROMPTS],
        PPOConfig(
            num_steps=2,
            batch_size=2,
            samples_per_prompt=1,
            advantage_estimator="gae",  # RLOO's baseline is 0 for identical greedy samples
            value_warmup_steps=0,
            mini_batch_size=1,
            max_new_tokens=4,
            learning_rate=1e-2,
            base_dtype=BASE_DTYPE,
        ),
        out / "ppo",
    )
    sft = sft_train.run_sft(
        model_dir,
        [SFTExample(user(f"What is {i} + {i}?"), "Two plus two is four.") for i in range(8)],
        SFTConfig(
            num_epochs=1,
            batch_size=GLOBAL_BATCH // world,
            learning_rate=5e-3,
            base_dtype=BASE_DTYPE,
        ),
        out / "sft",
    )
    from accelerate.state import AcceleratorState

    (out / f"rank-{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "world": world,
                "distributed_type": str(AcceleratorState().distributed_type),
                "reward_history": reward.history,
                "reward_metrics": reward.metrics,
                "ppo_history": ppo.history,
                "sft_history": sft.history,
                "frozen_numel": frozen,
            }
        )
    )


if __name__ == "__main__":
    main()
