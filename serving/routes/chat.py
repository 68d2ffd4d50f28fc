"""``POST /v1/chat/completions``: OpenAI chat completions plus the pair extension."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from serving.chat import complete, prepare, replan_after_swap
from serving.deps import CallerDep, ServicesDep
from serving.engines.protocol import AdapterRejected, UnknownAdapter
from serving.protocol import ChatCompletion, ChatCompletionRequest
from serving.streaming import ChatStream

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    services: ServicesDep,
    caller: CallerDep,
    x_admin_token: Annotated[str | None, Header()] = None,
) -> ChatCompletion | StreamingResponse:
    job = prepare(services, body, caller, x_admin_token)
    if not body.stream:
        return await complete(services, job)
    stream = ChatStream(services, job)
    try:
        first = await stream.first()
    except (UnknownAdapter, AdapterRejected):
        # A hot swap unloaded the planned version before decoding began: plan again once.
        if not replan_after_swap(services, job):
            raise
        stream = ChatStream(services, job)
        first = await stream.first()
    return StreamingResponse(
        stream.body(first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
