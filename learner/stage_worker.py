"""One training stage from a request file, under any launcher (see ``learner.launch``).

``<launcher> -m learner.stage_worker REQUEST``: every process runs the same trainer (they shard
the data and synchronise gradients through ``accelerate``); only the main process writes
``result.json`` beside the adapter it saved.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from learner.launch import (
    RESULT_FILE,
    decode_comparisons,
    decode_examples,
    decode_prompt,
    decode_ratings,
    outcome_to_json,
)
from learner.trainers import RealTrainers, TrainOutcome


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def run_request(request: dict[str, Any]) -> TrainOutcome:
    o = request["overrides"]
    trainers = RealTrainers(
        o["reward"], o["ppo"], o["sft"], o["eval"], request["seed"], request["device"]
    )
    inputs, out_dir = request["inputs"], Path(request["out_dir"])
    base = Path(inputs["base"])
    stage = request["stage"]
    if stage == "reward":
        comparisons = decode_comparisons(inputs["comparisons"])
        ratings = decode_ratings(inputs.get("ratings", []))
        return trainers.reward(
            base, comparisons, out_dir, ratings, int(inputs.get("seed_offset", 0))
        )
    if stage == "ppo":
        prompts = [decode_prompt(p) for p in inputs["prompts"]]
        init = _optional_path(inputs["init"])
        steps = inputs.get("num_steps")
        return trainers.ppo(base, Path(inputs["reward_dir"]), prompts, out_dir, init, steps)
    if stage == "sft":
        examples = decode_examples(inputs["examples"])
        return trainers.sft(base, examples, out_dir, _optional_path(inputs["init"]))
    raise ValueError(f"unknown stage {stage!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m learner.stage_worker REQUEST.json", file=sys.stderr)
        return 2
    from common.logs import configure_logging

    configure_logging()
    request_path = Path(args[0])
    request = json.loads(request_path.read_text())
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
