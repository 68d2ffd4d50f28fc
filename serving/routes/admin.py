"""``/admin/adapters``: list, load, promote, roll back, canary. Thin: the AdapterManager
decides; this maps its outcomes to HTTP (AdapterRejected -> 422, unknown version -> 404, a
request the current state does not allow, e.g. nothing to roll back to -> 409)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter

from schemas.events import UserErased
from serving.adapters.errors import AdapterStateError
from serving.api_models import (
    AdapterState,
    CanaryRequest,
    EraseRequest,
    EraseResponse,
    ErrorResponse,
    LoadRequest,
    VersionRequest,
)
from serving.deps import AdminDep, ServicesDep
from serving.engines.protocol import AdapterRejected
from serving.errors import APIError
from serving.security import constant_time_in

logger = logging.getLogger(__name__)
router = APIRouter(
    prefix="/admin",
    dependencies=[AdminDep],
    responses={422: {"model": ErrorResponse, "description": "the adapter failed its checks"}},
)


def _state(services: ServicesDep) -> AdapterState:
    return AdapterState(
        serving_version=services.adapters.serving_version(),
        canary_version=services.adapters.canary_version(),
        adapters=services.adapters.list(),
    )


@contextmanager
def _mapped(action: str) -> Iterator[None]:
    try:
        yield
    except AdapterRejected as exc:
        raise APIError(422, f"{action} refused: {exc}", code="adapter_rejected") from None
    except LookupError as exc:
        raise APIError(
            404, f"{action}: unknown adapter version ({exc})", code="adapter_not_found"
        ) from None
    except AdapterStateError as exc:
        raise APIError(409, f"{action}: {exc}", code="adapter_state_conflict") from None
    except ValueError as exc:
        raise APIError(400, f"{action}: {exc}", code="invalid_adapter_request") from None
    logger.info("admin %s done", action)


@router.get("/adapters")
async def list_adapters(services: ServicesDep) -> AdapterState:
    return _state(services)


@router.post("/adapters/load")
async def load(body: LoadRequest, services: ServicesDep) -> AdapterState:
    with _mapped(f"load {body.version}"):
        await services.adapters.load(body.version, body.uri)
    return _state(services)


@router.post("/adapters/promote")
async def promote(body: VersionRequest, services: ServicesDep) -> AdapterState:
    with _mapped(f"promote {body.version}"):
        await services.adapters.promote(body.version)
    return _state(services)


@router.post("/adapters/rollback")
async def rollback(services: ServicesDep) -> AdapterState:
    with _mapped("rollback"):
        await services.adapters.rollback()
    return _state(services)


@router.post("/adapters/canary")
async def canary(body: CanaryRequest, services: ServicesDep) -> AdapterState:
    with _mapped(f"canary {body.version}"):
        services.adapters.set_canary(body.version)
    return _state(services)


@router.post("/users/erase", status_code=202)
async def erase_user(body: EraseRequest, services: ServicesDep) -> EraseResponse:
    """Emit ``user.erased``; the learner deletes the user's stored data when it reads it (the
    event goes through the spool like every event, so a broker outage delays, never loses it)."""
    user_id = body.user_id or _user_id_by_name(services, body.api_key or "", body.user)
    event = UserErased(user_id=user_id, requested_by="admin-api", reason=body.reason)
    services.events.emit(event)
    logger.info("erasure of user %s requested (event %s)", user_id, event.event_id)
    return EraseResponse(event_id=event.event_id, user_id=user_id)


def _user_id_by_name(services: ServicesDep, api_key: str, user: str | None) -> str:
    """The pseudonymous id of ``user`` under ``api_key``, which must be a configured (or
    retired) key: a typo would derive the id of nobody, and the erasure would do nothing."""
    settings = services.settings
    known = [k.get_secret_value() for k in (*settings.api_keys, *settings.retired_api_keys)]
    if not constant_time_in(api_key, known):
        hint = "" if known else "; no API keys are configured here: erase by user_id"
        # 404, not 400: the body is well-formed; the key it names does not exist here.
        raise APIError(
            404,
            f"api_key is not one of this service's API keys (current or retired){hint}",
            param="api_key",
            code="unknown_api_key",
        )
    return services.user_hash(api_key, user)
