"""What a trainer set is asked (one job per stage) and what it answers (an outcome).

A job holds every input of its stage, so the in-process, launched and fake trainers share one
signature per stage and the launcher sends the same object over JSON (``wire``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from learner.data import Comparison, Prompt, Rating, SFTExample


@dataclass
class TrainOutcome:
    adapter_dir: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalOutcome:
    reward_gain: float
    kl: float
    sanity_failures: list[str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class RewardJob:
    """Train a reward model; ``seed_offset`` > 0 trains an independent judge on the same data."""

    base: Path
    comparisons: list[Comparison]
    out_dir: Path
    ratings: list[Rating] = field(default_factory=list)
    seed_offset: int = 0


@dataclass(frozen=True)
class PPOJob:
    """PPO against ``reward_dir`` from ``init`` (None: the base); ``num_steps`` None: configured."""

    base: Path
    reward_dir: Path
    prompts: list[Prompt]
    out_dir: Path
    init: Path | None = None
    num_steps: int | None = None


@dataclass(frozen=True)
class SFTJob:
    base: Path
    examples: list[SFTExample]
    out_dir: Path
    init: Path | None = None


@dataclass(frozen=True)
class EvalJob:
    base: Path
    policy_dir: Path
    reward_dir: Path
    prompts: list[Prompt]
    sanity_prompts: Sequence[str]


class Trainers(Protocol):
    def reward(self, job: RewardJob) -> TrainOutcome: ...

    def ppo(self, job: PPOJob) -> TrainOutcome: ...

    def sft(self, job: SFTJob) -> TrainOutcome: ...

    def evaluate(self, job: EvalJob) -> EvalOutcome: ...


class StageConfigs:
    """Per-stage config overrides (from LEARNER_*_CONFIG), the seed, device and base dtype, as
    every trainer set takes them (a stage's overrides win over the last three)."""

    def __init__(
        self,
        reward_config: dict[str, Any],
        ppo_config: dict[str, Any],
        sft_config: dict[str, Any],
        eval_config: dict[str, Any],
        seed: int,
        device: str = "auto",
        base_dtype: str = "auto",
    ) -> None:
        self.overrides = {
            "reward": reward_config,
            "ppo": ppo_config,
            "sft": sft_config,
            "eval": eval_config,
        }
        self.seed = seed
        self.device = device
        self.base_dtype = base_dtype
