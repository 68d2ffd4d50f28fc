"""One user turn through a tokenizer's own chat template, ready for ``model.generate``."""

from __future__ import annotations

from typing import Any


def user_turn_batch(tokenizer: Any, content: str) -> Any:
    """The template's ids and attention mask (tensors) for one user message plus the assistant's
    opening, as a chat would send it."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
