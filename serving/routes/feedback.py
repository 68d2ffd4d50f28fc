"""``POST /v1/feedback``: a vote on a served pair or answer (see ``serving.feedback``)."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import CallerDep, ServicesDep
from serving.feedback import record_feedback
from serving.protocol import FeedbackRequest, FeedbackResponse

router = APIRouter()


@router.post("/v1/feedback")
async def feedback(
    body: FeedbackRequest, services: ServicesDep, caller: CallerDep
) -> FeedbackResponse:
    return record_feedback(services, body, caller)
