"""One accepted chat request, planned: the state the handler (``serving.chat``) and the SSE
stream (``serving.streaming``) both read, kept apart so that neither module imports the other."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from schemas.events import ChatMessage, SamplingParams
from serving.api_models import ChatCompletionRequest
from serving.pairing import AnswerPlan


@dataclass
class ChatJob:
    """One accepted chat request, planned: everything needed to answer and to log it."""

    body: ChatCompletionRequest
    messages: list[ChatMessage]
    sampling: SamplingParams
    plan: AnswerPlan
    paired: bool
    pinned: bool
    user_hash: str
    model: str
    # The inner pair id (logged); the client gets it signed (ChatHandler.pair_token).
    pair_id: str | None
    # Inner response ids, canonical order.
    response_ids: list[str]
    started: float = field(default_factory=time.perf_counter)

    def api_index(self, canonical: int) -> int:
        return self.plan.shown_order.index(canonical)
