"""The four ML entry points behind one small interface, so the cycle can run real or fake ones.

Real: ``learner.rm.train.train_reward_model``, ``learner.ppo.train.run_ppo``,
``learner.sft.train.run_sft``, ``learner.evaluate.evaluate_policy`` (imported lazily: the
service's CLI and tests of the orchestration do not pay for torch). Fake (``trainers="fake"``):
writes a small but well-formed LoRA adapter and returns metrics from the overrides in settings,
so crash-safety and gate tests of the *service* run in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import time
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


class Trainers(Protocol):
    def reward(
        self,
        base: Path,
        comparisons: list[Comparison],
        out_dir: Path,
        ratings: list[Rating] | None = None,
        seed_offset: int = 0,
    ) -> TrainOutcome: ...

    def ppo(
        self,
        base: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        out_dir: Path,
        init: Path | None,
        num_steps: int | None = None,
    ) -> TrainOutcome: ...

    def sft(
        self, base: Path, examples: list[SFTExample], out_dir: Path, init: Path | None
    ) -> TrainOutcome: ...

    def evaluate(
        self,
        base: Path,
        policy_dir: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        sanity_prompts: Sequence[str],
    ) -> EvalOutcome: ...


def _config(cls: Any, overrides: dict[str, Any], seed: int, device: str = "auto") -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    defaults = {k: v for k, v in (("seed", seed), ("device", device)) if k in names}
    return cls(**defaults | overrides)


def _asdict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


class _StageConfigs:
    """Per-stage config overrides (from LEARNER_*_CONFIG) and the seed, as both trainer sets
    take them."""

    def __init__(
        self,
        reward_config: dict[str, Any],
        ppo_config: dict[str, Any],
        sft_config: dict[str, Any],
        eval_config: dict[str, Any],
        seed: int,
        device: str = "auto",
    ) -> None:
        self.overrides = {
            "reward": reward_config,
            "ppo": ppo_config,
            "sft": sft_config,
            "eval": eval_config,
        }
        self.seed = seed
        self.device = device


class RealTrainers(_StageConfigs):
    def reward(
        self,
        base: Path,
        comparisons: list[Comparison],
        out_dir: Path,
        ratings: list[Rating] | None = None,
        seed_offset: int = 0,
    ) -> TrainOutcome:
        from learner.rm.config import RewardConfig
        from learner.rm.train import train_reward_model

        config = _config(RewardConfig, self.overrides["reward"], self.seed, self.device)
        config.seed += seed_offset
        res = train_reward_model(base, comparisons, config, out_dir, ratings=ratings)
        return TrainOutcome(
            Path(res.adapter_dir), dict(res.metrics), list(res.history), _asdict(config)
        )

    def ppo(
        self,
        base: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        out_dir: Path,
        init: Path | None,
        num_steps: int | None = None,
    ) -> TrainOutcome:
        from learner.ppo.config import PPOConfig
        from learner.ppo.train import run_ppo

        overrides = self.overrides["ppo"] | ({"num_steps": num_steps} if num_steps else {})
        config = _config(PPOConfig, overrides, self.seed, self.device)
        res = run_ppo(base, reward_dir, prompts, config, out_dir, init_adapter=init)
        return TrainOutcome(
            Path(res.adapter_dir), dict(res.metrics), list(res.history), _asdict(config)
        )

    def sft(
        self, base: Path, examples: list[SFTExample], out_dir: Path, init: Path | None
    ) -> TrainOutcome:
        from learner.sft.config import SFTConfig
        from learner.sft.train import run_sft

        config = _config(SFTConfig, self.overrides["sft"], self.seed, self.device)
        res = run_sft(base, examples, config, out_dir, init_adapter=init)
        return TrainOutcome(
            Path(res.adapter_dir), dict(res.metrics), list(res.history), _asdict(config)
        )

    def evaluate(
        self,
        base: Path,
        policy_dir: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        sanity_prompts: Sequence[str],
    ) -> EvalOutcome:
        from learner import evaluate as ev

        overrides = dict(self.overrides["eval"])
        # An empty list is a choice (LEARNER_SANITY_PROMPTS=[]: no sanity prompts), not "unset":
        # the setting's own default is the non-empty list.
        if "sanity_prompts" in {f.name for f in dataclasses.fields(ev.EvalConfig)}:
            overrides.setdefault("sanity_prompts", tuple(sanity_prompts))
        config = _config(ev.EvalConfig, overrides, self.seed, self.device)
        res = ev.evaluate_policy(base, policy_dir, reward_dir, prompts, config)
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


class FakeTrainers(_StageConfigs):
    """Stand-ins that obey the same contract (adapter files on disk, metrics) in milliseconds.

    Metrics come from ``reward_config``/``ppo_config``/``eval_config`` keys ``fake_*`` (e.g.
    ``{"fake_accuracy": 0.4}`` to exercise the reward gate) and ``fake_seconds`` slows a stage
    so a test can kill the process during it.
    """

    def __init__(
        self,
        reward_config: dict[str, Any],
        ppo_config: dict[str, Any],
        sft_config: dict[str, Any],
        eval_config: dict[str, Any],
        seed: int,
    ) -> None:
        super().__init__(reward_config, ppo_config, sft_config, eval_config, seed)
        self.calls: list[tuple[str, int]] = []

    def _stage(self, name: str, out_dir: Path, n: int, init: Path | None) -> Path:
        self.calls.append((name, n))
        time.sleep(float(self.overrides[name].get("fake_seconds", 0.0)))
        return write_fake_adapter(out_dir / "adapter", seed=n, init=init)

    def reward(
        self,
        base: Path,
        comparisons: list[Comparison],
        out_dir: Path,
        ratings: list[Rating] | None = None,
        seed_offset: int = 0,
    ) -> TrainOutcome:
        name = "reward-eval" if seed_offset else "reward"
        self.calls.append((name, len(comparisons)))
        time.sleep(float(self.overrides["reward"].get("fake_seconds", 0.0)))
        adapter = write_fake_adapter(out_dir / "adapter", seed=len(comparisons) + seed_offset)
        acc = float(self.overrides["reward"].get("fake_accuracy", 0.8))
        history = [{"step": float(i + 1), "loss": 0.7 - 0.1 * i, "accuracy": acc} for i in range(3)]
        return TrainOutcome(
            adapter,
            {
                "accuracy": acc,
                "margin": 0.5,
                "train_count": float(len(comparisons)),
                # As many held-out votes as the fake claims (the gate's power depends on it).
                "eval_count": float(self.overrides["reward"].get("fake_eval_count", 100)),
            },
            history,
        )

    def ppo(
        self,
        base: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        out_dir: Path,
        init: Path | None,
        num_steps: int | None = None,
    ) -> TrainOutcome:
        adapter = self._stage("ppo", out_dir, len(prompts), init)
        history = [
            {"step": float(i + 1), "objective/kl": 0.01 * i, "objective/scores": 0.1 * i}
            for i in range(num_steps or 4)
        ]
        return TrainOutcome(adapter, dict(history[-1]), history)

    def sft(
        self, base: Path, examples: list[SFTExample], out_dir: Path, init: Path | None
    ) -> TrainOutcome:
        adapter = self._stage("sft", out_dir, len(examples), init)
        return TrainOutcome(adapter, {"loss": 1.0, "count": float(len(examples))})

    def evaluate(
        self,
        base: Path,
        policy_dir: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        sanity_prompts: Sequence[str],
    ) -> EvalOutcome:
        self.calls.append(("evaluate", len(prompts)))
        cfg = self.overrides["eval"]
        gain, kl = float(cfg.get("fake_reward_gain", 0.2)), float(cfg.get("fake_kl", 0.05))
        failures = list(cfg.get("fake_sanity_failures", []))
        return EvalOutcome(
            gain, kl, failures, {"reward_gain": gain, "kl": kl, "eval_prompts": float(len(prompts))}
        )


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
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": 4,
                "lora_alpha": 8,
                "fake": True,
                "init": str(init) if init else None,
            }
        )
    )
    return out


def make_trainers(settings: Any) -> Trainers:
    configs = (
        settings.reward_config,
        settings.ppo_config,
        settings.sft_config,
        settings.eval_config,
        settings.seed,
    )
    if settings.trainers == "fake":
        return FakeTrainers(*configs)
    if settings.train_launcher:
        from learner.launch import LaunchedTrainers, launcher_from_setting

        launcher = launcher_from_setting(settings.train_launcher)
        return LaunchedTrainers(launcher, *configs, device=settings.device)
    return RealTrainers(*configs, device=settings.device)
