"""Run by ``accelerate launch`` in test_accelerate_launch.py: the unchanged trainers on 2 ranks.

Each rank writes what it saw (rank, world size, a digest of its final trainable weights) and
which ranks called ``save``, so the test can check that both ranks trained the same synchronised
model and that the result was written once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from learner.ppo import train as ppo_train
from learner.ppo.config import PPOConfig
from learner.rm.config import RewardConfig
from learner.rm.model import RewardModel
from learner.rm.train import train_reward_model
from tests.learner.ml.helpers import PROMPTS, separable_comparisons, user


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))  # the trainers create the Accelerator themselves
    saved_by: list[int] = []
    digests: dict[str, str] = {}
    original_save = RewardModel.save

    def counting_save(self: RewardModel, *args: Any) -> None:
        saved_by.append(rank)
        original_save(self, *args)

    RewardModel.save = counting_save  # type: ignore[method-assign,assignment]
    original_forward = RewardModel.forward

    def remember(self: RewardModel, *args: torch.Tensor) -> torch.Tensor:
        trainable = [p for p in self.parameters() if p.requires_grad]
        if trainable:  # the training model, not PPO's frozen scorer
            digest = hashlib.sha256()
            for p in trainable:
                digest.update(p.detach().numpy().tobytes())
            digests["reward"] = digest.hexdigest()
        return original_forward(self, *args)

    RewardModel.forward = remember  # type: ignore[method-assign,assignment]
    # Accumulation 2: the ranks' gradients are all-reduced only on the stepping micro-batch.
    config = RewardConfig(
        num_epochs=2,
        batch_size=4,
        learning_rate=5e-3,
        eval_fraction=0.25,
        gradient_accumulation_steps=2,
    )
    result = train_reward_model(model_dir, separable_comparisons(32), config, out / "reward")
    ppo_saves: list[int] = []
    original_ppo_save = ppo_train._save

    def counting_ppo_save(*args: Any, **kwargs: Any) -> Any:
        ppo_saves.append(rank)
        return original_ppo_save(*args, **kwargs)

    ppo_train._save = counting_ppo_save
    ppo = ppo_train.run_ppo(
        model_dir,
        result.adapter_dir,
        [user(p) for p in PROMPTS],
        PPOConfig(
            num_steps=2,
            batch_size=2,
            mini_batch_size=2,
            max_new_tokens=4,
            learning_rate=1e-2,
            gradient_accumulation_steps=2,
        ),
        out / "ppo",
    )
    from accelerate import PartialState

    state = PartialState()  # the shared state the trainers' Accelerator set up
    (out / f"rank-{rank}.json").write_text(
        json.dumps(
            {
                "rank": state.process_index,
                "world": state.num_processes,
                "distributed_type": str(state.distributed_type),
                "reward_saved_by": saved_by,
                "ppo_saved_by": ppo_saves,
                "reward_digest_at_eval": digests["reward"],
                "reward_steps": len(result.history),
                "accuracy": result.metrics["accuracy"],
                "ppo_steps": len(ppo.history),
            }
        )
    )


if __name__ == "__main__":
    main()
