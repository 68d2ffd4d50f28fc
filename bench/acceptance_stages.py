"""What each training stage taught, for an acceptance run with corrections on.

A cycle runs SFT on the users' corrections, then PPO from that SFT adapter against the reward
model trained on the votes, so the published version's win mixes both. To separate them, after
the run's last cycle the learner's own commands train each stage alone, from the base model, on
the same data, and publish it as a manual version:

- SFT only: ``learner sft --publish`` on every stored correction (a fresh LoRA, as the cycle's
  SFT starts from the parent: the base in a one-round run);
- PPO only: ``learner ppo --publish`` from a fresh LoRA against the last cycle's reward model,
  with that cycle's number of PPO iterations, on training prompts (held-out ones stay out).

Serving loads each (the ``adapter.published`` event promotes it; the users are done by then),
and each gets the same blind evaluation against the base as the published SFT + PPO version.
The learner commands run beside the idle learner daemon on the same store and adapter store.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.processes import entry_point

_PUBLISHED = re.compile(r"^published (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class StageResult:
    """One stage's blind evaluation against the base (``report``: a loop.eval EvalReport)."""

    stage: str
    version: str
    report: Any  # None: the stage could not be trained (``note`` says why)
    note: str = ""

    def row(self) -> str:
        if self.report is None:
            return f"| {self.stage} | - | not trained: {self.note} | - | - |"
        low, high = self.report.interval()
        words = self.report.a.summary()["mean_words"], self.report.b.summary()["mean_words"]
        mean = " / ".join("-" if w is None else f"{w:.1f}" for w in words)
        return (
            f"| {self.stage} | {self.version} | {self.report.win_rate:.3f} "
            f"[{low:.3f}, {high:.3f}] | {self.report.n} | {mean} |"
        )


def published_version(output: str) -> str:
    """The version a ``learner ... --publish`` command printed ("published policy@v2")."""
    found = _PUBLISHED.findall(output)
    if not found:
        raise RuntimeError(f"the learner command published nothing:\n{output[-2000:]}")
    return str(found[-1])


def learner_command(args: list[str], env: dict[str, str], log: Path) -> str:
    """Run ``learner ARGS`` with the run's learner settings; stdout back, stderr to ``log``."""
    full_env = {**os.environ, **env, "LEARNER_METRICS_PORT": "0"}
    with log.open("ab") as err:
        done = subprocess.run(
            [*entry_point("learner", "learner.cli"), *args],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        # The log's name only: this line goes into a results table (no machine paths there).
        raise RuntimeError(
            f"learner {args[0]} exited {done.returncode}; see {log.parent.name}/{log.name} in "
            f"the run directory\n{out[-2000:]}"
        )
    return out


def stage_commands(checkpoint: dict[str, Any], work: Path) -> dict[str, list[str]]:
    """The learner commands that train each stage alone, from the last cycle's checkpoint."""
    reward = checkpoint.get("reward_adapter")
    steps = checkpoint.get("metrics", {}).get("ppo/step")
    if not reward or steps is None:
        raise ValueError("the last cycle has no reward model or PPO stage to repeat")
    return {
        "SFT only": ["sft", "--publish", "--out", str(work / "sft-only")],
        "PPO only": [
            "ppo",
            "--publish",
            "--reward-adapter",
            str(reward),
            "--steps",
            str(int(steps)),
            "--out",
            str(work / "ppo-only"),
        ],
    }


def stage_contributions(
    checkpoint: dict[str, Any],
    env: dict[str, str],
    work: Path,
    evaluate: Callable[[str, str], Any],
    wait_serving: Callable[[str], None],
    say: Callable[[str], None] = print,
) -> list[StageResult]:
    """Train, publish and evaluate each stage alone. ``evaluate(version, out_name)`` runs the
    blind eval of ``version`` against the base; ``wait_serving(version)`` returns once serving
    answers with it."""
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for stage, command in stage_commands(checkpoint, work).items():
        say(f"stage report: training {stage} ({' '.join(command[:2])})")
        try:
            output = learner_command(command, env, work / "learner-commands.log")
        except RuntimeError as exc:  # e.g. no correction was stored: nothing to train SFT on
            say(f"stage report: {stage} not trained: {exc}")
            results.append(StageResult(stage, "-", None, str(exc).splitlines()[0]))
            continue
        version = published_version(output)
        wait_serving(version)
        name = "eval-" + stage.lower().replace(" ", "-")
        results.append(StageResult(stage, version, evaluate(version, name)))
    rows = [
        {"stage": r.stage, "version": r.version, "note": r.note}
        | (r.report.to_dict() if r.report is not None else {})
        for r in results
    ]
    (work / "stages.json").write_text(json.dumps(rows, indent=2))
    return results


def markdown(both: StageResult, alone: list[StageResult]) -> list[str]:
    return [
        "### What taught the model: each stage alone and both",
        "",
        "Each row: a blind evaluation against the base on the held-out prompts (same prompts, "
        "seeds and judge as the verdict). SFT only and PPO only were trained from the base after "
        "the run by `learner sft --publish` (every correction) and `learner ppo --publish` "
        "(the last cycle's reward model and PPO iterations).",
        "",
        "| stage | version | win rate vs base [95%] | n | mean words policy / base |",
        "|---|---|---|---|---|",
        *(r.row() for r in [*alone, both]),
        "",
    ]
