"""The tokens that end an assistant turn: one definition for serving and every learner stage.

A model's end-of-turn tokens are spread over three places, and a checkpoint may name its turn's
end in only one of them:

- the generation config's ``eos_token_id``, an id or a list (Llama 3.1 Instruct lists
  ``<|end_of_text|>``, ``<|eom_id|>`` and ``<|eot_id|>``): what ``generate`` and vLLM stop on;
- the tokenizer's ``eos_token`` (``<|end_of_text|>`` for some Llama 3 releases, whose turns end
  with ``<|eot_id|>``);
- the chat template: the special token it prints right after an assistant message's content.

``end_of_turn_ids`` is their union: serving stops an answer on any of them, and so do the PPO and
evaluation rollouts, so the policy is trained on the answers it is served with.
``end_of_turn_id`` is the one token a served answer ends with (the template's, else the
tokenizer's EOS): the learner appends it to every stored answer it trains on.

For ChatML models (SmolLM2, Qwen) all three are ``<|im_end|>``. References: the generation
config's list (https://huggingface.co/docs/transformers/main_classes/text_generation); Llama 3's
turn format (https://www.llama.com/docs/model-cards-and-prompt-formats/llama3_1/).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def end_of_turn_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every id that ends an assistant turn, in order: the generation config's, the tokenizer's
    EOS, the chat template's end-of-turn token (no duplicates).

    ``generation_config`` is a model directory (its ``generation_config.json``, else its
    ``config.json``, as transformers derives it), an object with ``eos_token_id`` (a model's
    ``generation_config``), or None.
    """
    ids: list[int] = []
    for value in (_configured_eos(generation_config), tokenizer.eos_token_id):
        ids.extend(_as_ids(value))
    template_id = chat_template_end_of_turn_id(tokenizer)
    if template_id is not None:
        ids.append(template_id)
    return list(dict.fromkeys(ids))


def end_of_turn_id(tokenizer: Any) -> int:
    """The one token a served answer ends with: the chat template's end-of-turn token, else the
    tokenizer's EOS."""
    template_id = chat_template_end_of_turn_id(tokenizer)
    return int(tokenizer.eos_token_id) if template_id is None else template_id


def chat_template_end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template prints right after an assistant message's content.

    Found by rendering a user turn and an assistant turn around a unique placeholder and
    tokenising what follows the placeholder; None when there is no template, it cannot render
    that conversation, or the next token is not a special token (a template that ends a turn
    with plain text).
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    mark = f"\ue000{secrets.token_hex(8)}\ue001"  # as common.chat_encoding: no template alters it
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": mark}]
    try:
        rendered = str(tokenizer.apply_chat_template(messages, tokenize=False))
    except Exception as exc:  # a template's own raise_exception (roles, system turn) or syntax
        logger.debug("chat template does not render a user/assistant pair: %s", exc)
        return None
    if rendered.count(mark) != 1:
        return None
    after = rendered.partition(mark)[2]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    if not ids or ids[0] not in _special_ids(tokenizer):
        return None
    return int(ids[0])


def _special_ids(tokenizer: Any) -> set[int]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i) for i, token in added.items() if getattr(token, "special", False)} | {
        int(i) for i in tokenizer.all_special_ids
    }


def _configured_eos(source: Any) -> Any:
    if source is None:
        return None
    if isinstance(source, str | Path):
        for name in ("generation_config.json", "config.json"):
            path = Path(source) / name
            if path.is_file():
                value = json.loads(path.read_text()).get("eos_token_id")
                if value is not None:
                    return value
        return None
    return getattr(source, "eos_token_id", None)


def _as_ids(value: Any) -> Iterable[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return []
