"""Training stages in a separate, optionally multi-process launch (scale past one machine).

``learner run`` is one process: it owns the consumer, the SQLite store, the checkpoint and the
adapter store, and serves ``/metrics``. With ``LEARNER_TRAIN_LAUNCHER`` set (for example
``accelerate launch --multi_gpu --num_processes 4``), each training stage (reward model, PPO,
SFT) runs as ``<launcher> -m learner.stage_worker REQUEST``: the launcher starts N data-parallel
processes of the same trainer code, the main one writes the adapter and ``result.json``, and the
daemon reads the result back. So there is still one writer of every durable thing. When the
daemon stops by exception or signal (SIGTERM, SIGHUP, Ctrl-C) it kills the stage's process
group; after a SIGKILL of the daemon alone the launched group is left running (a pod restart
ends it; on a bare host kill it by hand before restarting).

The request holds everything the stage needs as JSON (examples, directories, config overrides,
seed); nothing travels through the environment except what the launcher itself sets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from learner.data import Comparison, Prompt, Rating, SFTExample
from learner.trainers import RealTrainers, TrainOutcome
from schemas.events import ChatMessage

logger = logging.getLogger(__name__)

REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"


class StageLaunchError(RuntimeError):
    """The launched stage exited non-zero or wrote no result."""


# ---- (de)serialising the stage inputs -------------------------------------------------------


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


# ---- the daemon side ------------------------------------------------------------------------


class LaunchedTrainers(RealTrainers):
    """``RealTrainers`` whose training stages run under ``launcher`` in a child process group.

    Evaluation stays in-process: it is inference on a few prompts, and the daemon needs its
    numbers for the gates right away.
    """

    def __init__(self, launcher: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.launcher = launcher

    def reward(
        self,
        base: Path,
        comparisons: list[Comparison],
        out_dir: Path,
        ratings: list[Rating] | None = None,
        seed_offset: int = 0,
    ) -> TrainOutcome:
        inputs = {
            "base": str(base),
            "comparisons": encode_comparisons(comparisons),
            "ratings": encode_ratings(ratings or []),
            "seed_offset": seed_offset,
        }
        return self._launch("reward", out_dir, inputs)

    def ppo(
        self,
        base: Path,
        reward_dir: Path,
        prompts: list[Prompt],
        out_dir: Path,
        init: Path | None,
        num_steps: int | None = None,
    ) -> TrainOutcome:
        return self._launch(
            "ppo",
            out_dir,
            {
                "base": str(base),
                "reward_dir": str(reward_dir),
                "prompts": [encode_prompt(p) for p in prompts],
                "init": str(init) if init else None,
                "num_steps": num_steps,
            },
        )

    def sft(
        self, base: Path, examples: list[SFTExample], out_dir: Path, init: Path | None
    ) -> TrainOutcome:
        return self._launch(
            "sft",
            out_dir,
            {
                "base": str(base),
                "examples": encode_examples(examples),
                "init": str(init) if init else None,
            },
        )

    def _launch(self, stage: str, out_dir: Path, inputs: dict[str, Any]) -> TrainOutcome:
        request = {
            "stage": stage,
            "out_dir": str(out_dir),
            "overrides": self.overrides,
            "seed": self.seed,
            "device": self.device,
            "inputs": inputs,
        }
        request_path = out_dir / REQUEST_FILE
        request_path.write_text(json.dumps(request))
        command = [*self.launcher, "-m", "learner.stage_worker", str(request_path)]
        logger.info("stage %s: launching %s", stage, shlex.join(command))
        run_process_group(command)
        result = out_dir / RESULT_FILE
        if not result.is_file():
            raise StageLaunchError(f"stage {stage}: the launch wrote no {RESULT_FILE}")
        return outcome_from_json(json.loads(result.read_text()))


def run_process_group(command: list[str]) -> None:
    """Run ``command`` in its own process group; any exit of ours (exception, StopRequested,
    signal) takes the whole group down, so no trainer outlives the daemon."""
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        rc = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    if rc != 0:
        raise StageLaunchError(f"{shlex.join(command)} exited with {rc}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def launcher_from_setting(value: str) -> list[str]:
    """``LEARNER_TRAIN_LAUNCHER`` split like a shell would; ``python`` means this interpreter."""
    parts = shlex.split(value)
    if parts and parts[0] in ("python", "python3"):
        parts[0] = sys.executable
    return parts
