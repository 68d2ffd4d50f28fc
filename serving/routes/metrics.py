"""``GET /metrics``: Prometheus text exposition of the default registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import metrics
from serving.deps import ServicesDep

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition",
        }
    },
)
async def prometheus(services: ServicesDep) -> Response:
    metrics.refresh(services)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
