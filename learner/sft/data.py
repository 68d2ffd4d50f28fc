"""Demonstrations from JSONL: one chat per line, ``{"messages": [{"role", "content"}, ...]}``.

The last message must be the assistant's: it is the completion to imitate; the messages before
it are the prompt (the same chat format as TRL's conversational SFT datasets).
"""

from __future__ import annotations

import json
from pathlib import Path

from learner.data import SFTExample
from schemas.events import ChatMessage


def parse_chat(record: object, where: str) -> SFTExample:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ValueError(f"{where}: expected an object with a 'messages' list")
    messages = [ChatMessage.model_validate(m) for m in record["messages"]]
    if len(messages) < 2 or messages[-1].role != "assistant":
        raise ValueError(f"{where}: needs a prompt and a final assistant message")
    return SFTExample(prompt=tuple(messages[:-1]), completion=messages[-1].content)


def load_jsonl(path: Path) -> list[SFTExample]:
    """Every non-blank line of ``path`` as an example; a bad line raises with its number."""
    examples = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: invalid JSON ({err.msg})") from err
            examples.append(parse_chat(record, f"{path}:{number}"))
    return examples
