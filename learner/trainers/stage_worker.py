"""One training stage from a request file, under any launcher (see ``learner.trainers.launched``).

``<launcher> -m learner.trainers.stage_worker REQUEST``: every process runs the same trainer
(they shard the data and synchronise gradients through ``accelerate``); only the main process
writes ``result.json`` beside the adapter it saved.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from learner.trainers.in_process import RealTrainers
from learner.trainers.protocol import TrainOutcome
from learner.trainers.wire import RESULT_FILE, decode_job, outcome_to_json


def configure_threads(request: dict[str, Any]) -> int:
    """torch's threads in one launched process: the learner's ``torch_threads`` setting, or
    with 0 the CPUs this process may use shared among the launch's processes on this machine
    (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate), so N processes on a C-CPU pod do
    not start N x C threads."""
    from common.cpu_budget import configure_torch_threads

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return configure_torch_threads(int(request.get("torch_threads", 0)), processes=local)


def run_request(request: dict[str, Any]) -> TrainOutcome:
    o = request["overrides"]
    trainers = RealTrainers(
        o["reward"],
        o["ppo"],
        o["sft"],
        o["eval"],
        request["seed"],
        request["device"],
        request.get("base_dtype", "auto"),
    )
    stage = request["stage"]
    job = decode_job(stage, request["job"])
    train: Any = getattr(trainers, stage)  # decode_job accepted only a launched stage's name
    outcome: TrainOutcome = train(job)
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m learner.trainers.stage_worker REQUEST.json", file=sys.stderr)
        return 2
    from common.logs import configure_logging

    configure_logging()
    request_path = Path(args[0])
    request = json.loads(request_path.read_text())
    configure_threads(request)
    outcome = run_request(request)
    # torchrun / accelerate set RANK and WORLD_SIZE; a plain process is rank 0 of 1.
    if int(os.environ.get("RANK", "0")) == 0:
        result = request_path.parent / RESULT_FILE
        tmp = result.with_suffix(".tmp")
        tmp.write_text(json.dumps(outcome_to_json(outcome, int(os.environ.get("WORLD_SIZE", "1")))))
        tmp.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
