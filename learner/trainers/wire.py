"""A stage's job and outcome as JSON: what the daemon and a launched stage worker exchange.

The request holds everything the stage needs (examples, directories, config overrides, seed);
nothing travels through the environment except what the launcher itself sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from learner.data import Comparison, Prompt, Rating, SFTExample
from learner.trainers.protocol import PPOJob, RewardJob, SFTJob, TrainOutcome
from schemas.events import ChatMessage

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"

LaunchedJob = RewardJob | PPOJob | SFTJob
JOB_TYPES: dict[str, type[LaunchedJob]] = {"reward": RewardJob, "ppo": PPOJob, "sft": SFTJob}


def encode_prompt(prompt: Prompt) -> list[dict[str, str]]:
    return [m.model_dump() for m in prompt]


def decode_prompt(raw: list[dict[str, str]]) -> Prompt:
    return tuple(ChatMessage.model_validate(m) for m in raw)


def encode_comparisons(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(c) | {"prompt": encode_prompt(c.prompt)} for c in comparisons]


def decode_comparisons(raw: list[dict[str, Any]]) -> list[Comparison]:
    return [Comparison(**(c | {"prompt": decode_prompt(c["prompt"])})) for c in raw]


def encode_ratings(ratings: list[Rating]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) | {"prompt": encode_prompt(r.prompt)} for r in ratings]


def decode_ratings(raw: list[dict[str, Any]]) -> list[Rating]:
    return [Rating(**(r | {"prompt": decode_prompt(r["prompt"])})) for r in raw]


def encode_examples(examples: list[SFTExample]) -> list[dict[str, Any]]:
    return [{"prompt": encode_prompt(e.prompt), "completion": e.completion} for e in examples]


def decode_examples(raw: list[dict[str, Any]]) -> list[SFTExample]:
    return [SFTExample(decode_prompt(e["prompt"]), e["completion"]) for e in raw]


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _optional_str(value: Path | None) -> str | None:
    return str(value) if value else None


# Per job field: (to JSON, from JSON). Fields not named here are JSON values already.
_FIELDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "base": (str, Path),
    "out_dir": (str, Path),
    "reward_dir": (str, Path),
    "init": (_optional_str, _optional_path),
    "comparisons": (encode_comparisons, decode_comparisons),
    "ratings": (encode_ratings, decode_ratings),
    "examples": (encode_examples, decode_examples),
    "prompts": (
        lambda prompts: [encode_prompt(p) for p in prompts],
        lambda raw: [decode_prompt(p) for p in raw],
    ),
}


def _identity(value: Any) -> Any:
    return value


def encode_job(job: LaunchedJob) -> dict[str, Any]:
    return {
        f.name: _FIELDS.get(f.name, (_identity, _identity))[0](getattr(job, f.name))
        for f in dataclasses.fields(job)
    }


def decode_job(stage: str, raw: dict[str, Any]) -> LaunchedJob:
    if stage not in JOB_TYPES:
        raise ValueError(f"unknown stage {stage!r}")
    values = {k: _FIELDS.get(k, (_identity, _identity))[1](v) for k, v in raw.items()}
    return JOB_TYPES[stage](**values)


def outcome_to_json(outcome: TrainOutcome, world_size: int) -> dict[str, Any]:
    return {
        "adapter_dir": str(outcome.adapter_dir),
        "metrics": outcome.metrics,
        "history": outcome.history,
        "config": outcome.config,
        "world_size": world_size,
    }


def outcome_from_json(raw: dict[str, Any]) -> TrainOutcome:
    config = dict(raw["config"]) | {"world_size": raw["world_size"]}
    return TrainOutcome(Path(raw["adapter_dir"]), raw["metrics"], raw["history"], config)
