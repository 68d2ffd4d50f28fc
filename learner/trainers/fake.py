"""Stand-in trainers (``trainers="fake"``) for tests of the *service*: they obey the same
contract (adapter files on disk, metrics) in milliseconds, so crash-safety and gate tests run in
seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from learner.trainers.protocol import (
    EvalJob,
    EvalOutcome,
    PPOJob,
    RewardJob,
    SFTJob,
    StageConfigs,
    TrainOutcome,
)


class FakeTrainers(StageConfigs):
    """Metrics come from ``reward_config``/``ppo_config``/``eval_config`` keys ``fake_*`` (e.g.
    ``{"fake_accuracy": 0.4}`` to exercise the reward gate; ``fake_independent_accuracy``: the
    independent evaluation member's; ``fake_signed_rank_z``: the rank test's z) and
    ``fake_seconds`` slows a stage so a test can kill the process during it.
    """

    def __init__(self, *configs_and_seed: Any) -> None:
        super().__init__(*configs_and_seed)
        self.calls: list[tuple[str, int]] = []

    def _stage(self, name: str, out_dir: Path, n: int, init: Path | None = None) -> Path:
        self.calls.append((name, n))
        time.sleep(float(self.overrides[name].get("fake_seconds", 0.0)))
        return write_fake_adapter(out_dir / "adapter", seed=n, init=init)

    def reward(self, job: RewardJob) -> TrainOutcome:
        n = len(job.comparisons)
        name = "reward-eval" if job.seed_offset else "reward"
        self.calls.append((name, n))
        time.sleep(float(self.overrides["reward"].get("fake_seconds", 0.0)))
        adapter = write_fake_adapter(job.out_dir / "adapter", seed=n + job.seed_offset)
        cfg = self.overrides["reward"]
        acc = float(cfg.get("fake_accuracy", 0.8))
        if job.seed_offset:  # the independent member may be told apart from the first
            acc = float(cfg.get("fake_independent_accuracy", acc))
        history = [{"step": float(i + 1), "loss": 0.7 - 0.1 * i, "accuracy": acc} for i in range(3)]
        metrics = {
            "accuracy": acc,
            "margin": 0.5,
            "train_count": float(n),
            # As many held-out votes as the fake claims (the gate's power depends on it).
            "eval_count": float(cfg.get("fake_eval_count", 100)),
        }
        if "fake_signed_rank_z" in cfg:  # the gate's rank test instead of its Wilson fallback
            metrics["signed_rank_z"] = float(cfg["fake_signed_rank_z"])
        return TrainOutcome(adapter, metrics, history)

    def ppo(self, job: PPOJob) -> TrainOutcome:
        adapter = self._stage("ppo", job.out_dir, len(job.prompts), job.init)
        history = [
            {"step": float(i + 1), "objective/kl": 0.01 * i, "objective/scores": 0.1 * i}
            for i in range(job.num_steps or 4)
        ]
        return TrainOutcome(adapter, history[-1] | {"prompts": float(len(job.prompts))}, history)

    def sft(self, job: SFTJob) -> TrainOutcome:
        adapter = self._stage("sft", job.out_dir, len(job.examples), job.init)
        return TrainOutcome(adapter, {"loss": 1.0, "count": float(len(job.examples))})

    def evaluate(self, job: EvalJob) -> EvalOutcome:
        self.calls.append(("evaluate", len(job.prompts)))
        cfg = self.overrides["eval"]
        gain, kl = float(cfg.get("fake_reward_gain", 0.2)), float(cfg.get("fake_kl", 0.05))
        failures = list(cfg.get("fake_sanity_failures", []))
        metrics = {"reward_gain": gain, "kl": kl, "eval_prompts": float(len(job.prompts))}
        return EvalOutcome(gain, kl, failures, metrics)


def write_fake_adapter(out: Path, seed: int, init: Path | None = None) -> Path:
    """A tiny LoRA-shaped safetensors + adapter_config.json (not loadable onto a real model)."""
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"base_model.model.lora_A.weight": rng.standard_normal((4, 8)).astype("float32")},
        str(out / "adapter_model.safetensors"),
    )
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "fake": True,
        "init": str(init) if init else None,
    }
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out
