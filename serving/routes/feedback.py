"""``POST /v1/feedback``: a vote on a served pair or answer (see ``serving.feedback``).

An optional ``Idempotency-Key`` header (any printable ASCII, at most 255 characters) makes a
retry of the same request the same event; without it every request is a new vote.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from serving.api_models import FeedbackRequest, FeedbackResponse
from serving.deps import FeedbackCallerDep, ServicesDep
from serving.feedback import record_feedback

router = APIRouter()


@router.post("/v1/feedback")
async def feedback(
    body: FeedbackRequest,
    services: ServicesDep,
    caller: FeedbackCallerDep,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> FeedbackResponse:
    return record_feedback(services, body, caller, idempotency_key)
