"""The real ML entry points, run in this process.

``learner.rm.train.train_reward_model``, ``learner.ppo.train.run_ppo``,
``learner.sft.train.run_sft`` and ``learner.evaluate.evaluate_policy`` are imported lazily: the
service's CLI and tests of the orchestration do not pay for torch.
"""

from __future__ import annotations

import dataclasses
import json
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


def _config(cls: Any, overrides: dict[str, Any], shared: dict[str, Any]) -> Any:
    """``cls`` from the learner-wide ``shared`` values (those it has a field for) and the
    stage's ``overrides``, which win."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    defaults = {k: v for k, v in shared.items() if k in names}
    return cls(**defaults | overrides)


def _train_outcome(res: Any, config: Any) -> TrainOutcome:
    """A trainer's result with the config it ran under (as JSON-safe values)."""
    as_json = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return TrainOutcome(Path(res.adapter_dir), dict(res.metrics), list(res.history), as_json)


class RealTrainers(StageConfigs):
    def _shared(self) -> dict[str, Any]:
        return {"seed": self.seed, "device": self.device, "base_dtype": self.base_dtype}

    def reward(self, job: RewardJob) -> TrainOutcome:
        from learner.rm.config import RewardConfig
        from learner.rm.train import train_reward_model

        config = _config(RewardConfig, self.overrides["reward"], self._shared())
        config.seed += job.seed_offset
        res = train_reward_model(
            job.base, job.comparisons, config, job.out_dir, ratings=job.ratings
        )
        return _train_outcome(res, config)

    def ppo(self, job: PPOJob) -> TrainOutcome:
        from learner.ppo.config import PPOConfig
        from learner.ppo.train import run_ppo

        steps = {"num_steps": job.num_steps} if job.num_steps else {}
        config = _config(PPOConfig, self.overrides["ppo"] | steps, self._shared())
        res = run_ppo(
            job.base, job.reward_dir, job.prompts, config, job.out_dir, init_adapter=job.init
        )
        return _train_outcome(res, config)

    def sft(self, job: SFTJob) -> TrainOutcome:
        from learner.sft.config import SFTConfig
        from learner.sft.train import run_sft

        config = _config(SFTConfig, self.overrides["sft"], self._shared())
        res = run_sft(job.base, job.examples, config, job.out_dir, init_adapter=job.init)
        return _train_outcome(res, config)

    def evaluate(self, job: EvalJob) -> EvalOutcome:
        from learner import evaluate as ev

        overrides = dict(self.overrides["eval"])
        # An empty list is a choice (LEARNER_SANITY_PROMPTS=[]: no sanity prompts), not "unset":
        # the setting's own default is the non-empty list.
        if "sanity_prompts" in {f.name for f in dataclasses.fields(ev.EvalConfig)}:
            overrides.setdefault("sanity_prompts", tuple(job.sanity_prompts))
        config = _config(ev.EvalConfig, overrides, self._shared())
        res = ev.evaluate_policy(job.base, job.policy_dir, job.reward_dir, job.prompts, config)
        return _eval_outcome(res)


def _eval_outcome(res: Any) -> EvalOutcome:
    """Normalise ``learner.evaluate.EvalResult`` (its ``metrics()`` keys carry "eval/")."""
    raw = res.metrics() if callable(getattr(res, "metrics", None)) else {}
    metrics = {k.removeprefix("eval/"): float(v) for k, v in raw.items()}
    metrics |= {
        "reward_gain": float(res.reward_gain),
        "kl": float(res.kl),
        "sanity_passed": float(bool(res.sanity_passed)),
    }
    failures = [str(f) for f in res.sanity_failures]
    if not res.sanity_passed and not failures:
        failures = ["sanity check failed"]
    return EvalOutcome(float(res.reward_gain), float(res.kl), failures, metrics)
