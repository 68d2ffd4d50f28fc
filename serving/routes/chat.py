"""``POST /v1/chat/completions``: OpenAI chat completions plus the pair extension.

A client that hangs up (timeout, closed tab) cancels its generation: the engine stops decoding
for it instead of spending the batch on an answer nobody will read, which matters most exactly
when the server is overloaded and clients time out. Streams get this from Starlette; plain
requests watch for ``http.disconnect`` here and are counted with status 499 (nginx's "client
closed request").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from serving.api_models import ChatCompletion, ChatCompletionRequest
from serving.chat import ChatHandler
from serving.deps import ChatCallerDep, ServicesDep

logger = logging.getLogger(__name__)
router = APIRouter()
CLIENT_CLOSED = 499


async def _unless_disconnected(
    request: Request, work: Awaitable[ChatCompletion]
) -> ChatCompletion | Response:
    task = asyncio.ensure_future(work)
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not gone.is_set():
            raise  # the server itself is cancelling the request
        logger.info("client closed the connection; generation cancelled")
        return Response(status_code=CLIENT_CLOSED)
    finally:
        watcher.cancel()


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletion,
            # OpenAPI 3.1 reads an event stream's schema as one event's.
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "string",
                                "description": "a JSON chat.completion.chunk, or [DONE]",
                            }
                        },
                    }
                }
            },
            "description": "the answer(s); with stream=true, server-sent chunks",
        }
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    services: ServicesDep,
    caller: ChatCallerDep,
    x_admin_token: Annotated[str | None, Header()] = None,
) -> ChatCompletion | Response:
    handler = ChatHandler(services)
    job = handler.prepare(body, caller, x_admin_token)
    if not body.stream:
        return await _unless_disconnected(request, handler.complete(job))
    return StreamingResponse(
        await handler.stream(job),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
