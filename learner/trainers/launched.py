"""Training stages in a separate, optionally multi-process launch (scale past one machine).

``learner run`` is one process: it owns the consumer, the SQLite store, the checkpoint and the
adapter store, and serves ``/metrics``. With ``LEARNER_TRAIN_LAUNCHER`` set (for example
``accelerate launch --multi_gpu --num_processes 4``), each training stage (reward model, PPO,
SFT) runs as ``<launcher> -m learner.trainers.stage_worker REQUEST``: the launcher starts N
data-parallel processes of the same trainer code (each holding the whole model, or with
``LEARNER_DISTRIBUTED=fsdp`` a shard of it: ``FSDP_CONFIG``, ``learner.sharding``), the main
one writes the adapter and ``result.json``, and the daemon reads the result back. So there is
still one writer of every durable thing. When the daemon stops by exception or signal (SIGTERM,
SIGHUP, Ctrl-C) it kills the stage's process group; after a SIGKILL of the daemon alone the
launched group is left running (a pod restart ends it; on a bare host kill it by hand before
restarting).

The request is the stage's job as JSON (``learner.trainers.wire``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from learner.trainers.in_process import RealTrainers
from learner.trainers.protocol import PPOJob, RewardJob, SFTJob, TrainOutcome
from learner.trainers.wire import (
    REQUEST_FILE,
    RESULT_FILE,
    LaunchedJob,
    encode_job,
    outcome_from_json,
)

logger = logging.getLogger(__name__)

# The accelerate config of LEARNER_DISTRIBUTED=fsdp, shipped inside the package.
FSDP_CONFIG = Path(__file__).parent / "accelerate" / "fsdp.yaml"
# accelerate launch options that pick another distributed type (or config) than the FSDP file.
_OTHER_DISTRIBUTED_FLAGS = (
    "--config_file",
    "--cpu",
    "--multi_gpu",
    "--tpu",
    "--use_deepspeed",
    "--use_megatron_lm",
)


class StageLaunchError(RuntimeError):
    """The launched stage exited non-zero or wrote no result."""


class LaunchedTrainers(RealTrainers):
    """``RealTrainers`` whose training stages run under ``launcher`` in a child process group.

    Evaluation stays in-process: it is inference on a few prompts, and the daemon needs its
    numbers for the gates right away.
    """

    def __init__(
        self, launcher: list[str], *args: Any, torch_threads: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.launcher = launcher
        self.torch_threads = torch_threads

    def reward(self, job: RewardJob) -> TrainOutcome:
        return self._launch("reward", job)

    def ppo(self, job: PPOJob) -> TrainOutcome:
        return self._launch("ppo", job)

    def sft(self, job: SFTJob) -> TrainOutcome:
        return self._launch("sft", job)

    def _launch(self, stage: str, job: LaunchedJob) -> TrainOutcome:
        request = {
            "stage": stage,
            "overrides": self.overrides,
            "seed": self.seed,
            "device": self.device,
            "base_dtype": self.base_dtype,
            "torch_threads": self.torch_threads,
            "job": encode_job(job),
        }
        request_path = job.out_dir / REQUEST_FILE
        request_path.write_text(json.dumps(request))
        command = [*self.launcher, "-m", "learner.trainers.stage_worker", str(request_path)]
        logger.info("stage %s: launching %s", stage, shlex.join(command))
        run_process_group(command)
        result = job.out_dir / RESULT_FILE
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


def launcher_for(value: str, distributed: str) -> list[str]:
    """The stage launcher for ``LEARNER_TRAIN_LAUNCHER`` and ``LEARNER_DISTRIBUTED``: as set for
    ``ddp``; for ``fsdp`` with ``--config_file`` the learner's FSDP config right after
    accelerate's launch command (options on the command line still win over the file's)."""
    parts = launcher_from_setting(value)
    if distributed == "fsdp":
        problem = fsdp_launcher_problem(value)
        if problem:
            raise ValueError(problem)
        at = _after_accelerate_launch(parts)
        parts[at:at] = ["--config_file", str(FSDP_CONFIG)]
    return parts


def fsdp_launcher_problem(value: str) -> str | None:
    """Why ``value`` cannot launch the stages with the FSDP config, or ``None``."""
    parts = shlex.split(value)
    if _after_accelerate_launch(parts) is None:
        return (
            "LEARNER_DISTRIBUTED=fsdp shards through `accelerate launch`: set "
            "LEARNER_TRAIN_LAUNCHER to one, e.g. 'accelerate launch --num_processes 4', "
            f"not {value!r}"
        )
    clashes = [p for p in parts if p.split("=", 1)[0] in _OTHER_DISTRIBUTED_FLAGS]
    if clashes:
        return (
            f"LEARNER_DISTRIBUTED=fsdp: drop {clashes} from LEARNER_TRAIN_LAUNCHER; the "
            "learner passes its FSDP config file, and accelerate lets these flags override it "
            "(--multi_gpu would silently train as plain DDP)"
        )
    return None


def _after_accelerate_launch(parts: list[str]) -> int | None:
    """The index just after ``accelerate launch`` or ``-m accelerate.commands.launch``."""
    for i in range(1, len(parts)):
        before, part = parts[i - 1], parts[i]
        if (part == "launch" and Path(before).name == "accelerate") or (
            before == "-m" and part == "accelerate.commands.launch"
        ):
            return i + 1
    return None
