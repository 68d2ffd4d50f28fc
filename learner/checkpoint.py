"""Cycle checkpoint: which stage a training cycle reached, with the store snapshot (offsets +
seq high-water mark) it trains on and the adapter directories its finished stages produced.

Written atomically (temp file, fsync, rename, fsync of the directory), so after SIGKILL the
file is either the previous or the next state. ``stage`` names the next stage to run; a resumed
cycle re-runs that stage from scratch on the *recorded* snapshot, so it trains on exactly the
same events and a half-written stage output is simply replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

Stage = Literal["sft", "reward", "ppo", "evaluate", "publish", "announce", "done"]
STAGES: tuple[Stage, ...] = ("sft", "reward", "ppo", "evaluate", "publish", "announce", "done")


class CycleCheckpoint(BaseModel):
    cycle_id: int
    stage: Stage = "sft"
    snapshot: dict[str, Any]  # learner.store.Snapshot.to_json(): offsets + max_seq used
    previous_snapshot: dict[str, Any] | None = None  # the parent version's, for offset ranges
    previous_max_seq: int = 0
    parent_version: str | None = None
    sft_adapter: str | None = None
    reward_adapter: str | None = None
    reward_version: str | None = None
    # A second reward model trained on the same votes with another seed (another held-out
    # split, initialisation and order): the evaluation scores with it, so the reported gain is
    # not measured by the model PPO optimised.
    reward_eval_adapter: str | None = None
    # The reward model was uncertain (learner.gates.classify_reward_model): the cycle went on
    # only because the users' votes will judge its policy, as a guarded canary. False in
    # checkpoints written before the flag existed, which is what they were.
    guarded: bool = False
    policy_adapter: str | None = None
    version: str | None = None  # reserved policy@vN once publishing started
    uri: str | None = None
    manifest_sha256: str | None = None
    outcome: str | None = None  # "published" | "rejected"
    reason: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    history: dict[str, list[dict[str, float]]] = Field(default_factory=dict)


def checkpoint_path(data_dir: Path) -> Path:
    return data_dir / "checkpoint.json"


def load_checkpoint(data_dir: Path) -> CycleCheckpoint | None:
    path = checkpoint_path(data_dir)
    if not path.exists():
        return None
    return CycleCheckpoint.model_validate_json(path.read_text())


def save_checkpoint(data_dir: Path, ckpt: CycleCheckpoint) -> None:
    path = checkpoint_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(ckpt.model_dump(mode="json"), indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
