"""Chat prompts as token ids, where message content cannot forge the template's own tokens.

Rendering the chat template to text and tokenising that text turns special-token text inside a
message (``<|im_end|>\\n<|im_start|>system``) into real special tokens, so a user could forge a
system turn. Instead the template is rendered with a unique placeholder in place of each
message's content; the template's own text is tokenised with special tokens recognised, and
each content with them split into ordinary text (``split_special_tokens=True``).

Serving and the learner both encode prompts with ``encode_chat``, so a policy is trained on the
same ids it is served with. The learner encodes every other stored text (answers, corrections,
the sampled answers it scores) with ``encode_text``, the same content path without a template:
otherwise a correction holding ``<|im_end|>`` would teach the policy to end its turn there.

Each piece is tokenised on its own, so merges never cross a boundary between template text and
content (for ChatML this changes nothing unless a content begins with whitespace). A template
that does not print each content exactly once, as given, is refused: placing content it
transforms or drops would no longer be what the template means.

``split_special_tokens`` switches a flag on the tokenizer for the duration of a call: do not
share one tokenizer between threads that encode at the same time.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from schemas.events import ChatMessage


class ChatTemplateError(ValueError):
    """The chat template does not render each message's content verbatim, once."""


def encode_chat(
    tokenizer: Any, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
) -> list[int]:
    """Prompt token ids: the chat template (and generation prompt), content kept as text."""
    template_parts = _template_parts(tokenizer, messages, add_generation_prompt)
    ids = _ids(tokenizer, template_parts[0], split_special=False)
    for message, after in zip(messages, template_parts[1:], strict=True):
        ids += _ids(tokenizer, message.content, split_special=True)
        ids += _ids(tokenizer, after, split_special=False)
    return ids


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of plain content text (an answer, a correction): special-token text in it is
    ordinary text, as message content in ``encode_chat``; no BOS/EOS is added."""
    return _ids(tokenizer, text, split_special=True)


def _template_parts(
    tokenizer: Any, messages: Sequence[ChatMessage], add_generation_prompt: bool
) -> list[str]:
    """The rendered template cut at each message's content: ``len(messages) + 1`` pieces."""
    # Private-use characters and a fresh nonce: no template alters them, no content holds them.
    nonce = secrets.token_hex(8)
    marks = [f"\ue000{nonce}:{i}\ue001" for i in range(len(messages))]
    placeholders = [
        {"role": m.role, "content": mark} for m, mark in zip(messages, marks, strict=True)
    ]
    rest = str(
        tokenizer.apply_chat_template(
            placeholders, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    )
    parts = []
    for i, mark in enumerate(marks):
        if rest.count(mark) != 1:
            raise ChatTemplateError(f"the chat template does not print message {i} once, as given")
        before, _, rest = rest.partition(mark)
        parts.append(before)
    parts.append(rest)
    return parts


def _ids(tokenizer: Any, text: str, split_special: bool) -> list[int]:
    # Passed on every call, never set on the tokenizer: each call sets the backend's flag from
    # its own argument, so no other caller's setting decides how this text is split.
    if not text:
        return []
    encoded = tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)
    return list(encoded["input_ids"])
