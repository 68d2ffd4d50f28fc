"""The shipped prompt set: short user prompts (questions, how-tos, small tasks).

Written for this project (no external data set). ``train.jsonl`` feeds the simulated users;
``eval.jsonl`` is held out for efficacy evaluation (every fifth prompt of each category), so an
adapter is never judged on prompts it was trained on. One JSON object per line:
``{"id": "howto-004", "category": "howto", "prompt": "..."}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    prompt: str


def load_prompts(source: str | Path = "train") -> list[Prompt]:
    """A split name ("train", "eval") of the shipped set, or a path to a JSONL file."""
    if str(source) in SPLITS:
        text = resources.files(__package__).joinpath(f"{source}.jsonl").read_text("utf-8")
    else:
        text = Path(source).read_text("utf-8")
    prompts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ValueError(f"{source}:{lineno}: every line needs a non-empty 'prompt'")
        prompts.append(
            Prompt(str(row.get("id", lineno)), str(row.get("category", "")), row["prompt"])
        )
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return prompts
