"""``/healthz`` (the process answers) and ``/readyz`` (model and serving adapter loaded)."""

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
    body = {
        "status": "ready" if adapters_ok else "not_ready",
        "engine": engine_ok,
        "adapter": adapters_ok,
        "serving_version": services.adapters.serving_version() if adapters_ok else None,
    }
    return JSONResponse(body, status_code=200 if adapters_ok else 503)
