"""The trainer set the settings ask for: fake, launched (LEARNER_TRAIN_LAUNCHER, sharded with
LEARNER_DISTRIBUTED=fsdp) or in-process."""

from __future__ import annotations

from typing import Any

from learner.trainers.fake import FakeTrainers
from learner.trainers.in_process import RealTrainers
from learner.trainers.launched import LaunchedTrainers, launcher_for
from learner.trainers.protocol import Trainers


def make_trainers(settings: Any) -> Trainers:
    configs = (
        settings.reward_config,
        ppo_overrides(settings),
        settings.sft_config,
        settings.eval_config,
        settings.seed,
    )
    if settings.trainers == "fake":
        return FakeTrainers(*configs)
    placement = {"device": settings.device, "base_dtype": settings.base_dtype}
    if settings.train_launcher:
        launcher = launcher_for(settings.train_launcher, settings.distributed)
        return LaunchedTrainers(
            launcher, *configs, **placement, torch_threads=settings.torch_threads
        )
    return RealTrainers(*configs, **placement)


def ppo_overrides(settings: Any) -> dict[str, Any]:
    """The PPO config overrides: ``kl_stop`` from the KL budget and ``rollout_engine`` from its
    setting, unless ppo_config sets them."""
    stop = settings.ppo_kl_stop_fraction * settings.kl_budget
    derived: dict[str, Any] = {}
    if settings.rollout_engine != "auto":  # auto is PPOConfig's own default
        derived["rollout_engine"] = settings.rollout_engine
    if stop > 0:
        derived["kl_stop"] = stop
    return derived | dict(settings.ppo_config)
