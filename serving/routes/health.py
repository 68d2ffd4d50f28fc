"""``/healthz`` (the process answers) and ``/readyz`` (model and serving adapter loaded).

A replica that started while Kafka was down serves the adapter store's latest promoted version
(or the base) and is ready but ``degraded`` until it has read the adapters topic: it answers
200 so it takes traffic, and says so in the body and in ``rlhf_serving_adapters_degraded``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    engine_ok = services.engine_started
    adapters_ok = engine_ok and services.adapters.ready()
    degraded = adapters_ok and services.adapters.degraded()
    status = "degraded" if degraded else "ready" if adapters_ok else "not_ready"
    body = {
        "status": status,
        "engine": engine_ok,
        "adapter": adapters_ok,
        "degraded": degraded,
        "serving_version": services.adapters.serving_version() if adapters_ok else None,
    }
    return JSONResponse(body, status_code=200 if adapters_ok else 503)
