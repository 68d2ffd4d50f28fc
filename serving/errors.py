"""Errors as values at the HTTP boundary, in OpenAI's error body shape.

``{"error": {"message", "type", "param", "code"}}`` with the status codes OpenAI uses (400 bad
request, 401 bad key, 403 forbidden, 404 unknown model/route, 413 body too large, 429/503
overload). Handlers turn validation errors, engine overload and unexpected faults into such
bodies; an unexpected fault is logged with context and answered with a generic message, never
a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api_models import ErrorInfo, ErrorResponse
from serving.engines.protocol import EngineFailure, EngineOverloaded, InvalidRequest, UnknownAdapter

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _TYPES.get(status, "api_error")
        self.headers = headers


def error_body(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    type_: str | None = None,
) -> dict[str, object]:
    info = ErrorInfo(
        message=message, type=type_ or _TYPES.get(status, "api_error"), param=param, code=code
    )
    return ErrorResponse(error=info).model_dump()


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.message, exc.param, exc.code, exc.type),
        status_code=exc.status,
        headers=exc.headers,
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    # A union field reports one error per member; our own validators' value errors say what
    # is actually wrong (e.g. a lone surrogate), so they go first.
    first = next(
        (e for e in errors if e.get("type") == "value_error"),
        errors[0] if errors else {"loc": (), "msg": "invalid request"},
    )
    # Drop the "body" prefix FastAPI adds and pydantic's union member tags ("list[TextPart]"),
    # keep the field path the client sent.
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and "[" not in str(p)]
    message = str(first.get("msg", "invalid request"))
    if loc:
        message = f"{'.'.join(loc)}: {message}"
    return error_response(APIError(400, message, param=".".join(loc) or None, code="invalid_value"))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    return error_response(
        APIError(
            exc.status_code, str(exc.detail), headers=exc.headers, code=code.get(exc.status_code)
        )
    )


def _retry_shortly(message: str, code: str) -> JSONResponse:
    """A 503 the client may retry after a second (the engine's state, not the request's)."""
    return error_response(APIError(503, message, code=code, headers={"Retry-After": "1"}))


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    return _retry_shortly("the engine is overloaded; retry shortly", "engine_overloaded")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    # The engine's own limits (prompt longer than the context, n above its batch size).
    return error_response(APIError(400, str(exc), code="invalid_request"))


async def _unknown_adapter(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        APIError(404, str(exc), param="adapter_version", code="adapter_not_found")
    )


async def _engine_failure(request: Request, exc: Exception) -> JSONResponse:
    logger.error("engine failure on %s %s: %s", request.method, request.url.path, exc)
    return _retry_shortly("generation failed; retry shortly", "engine_failure")


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        APIError(500, "internal server error", type_="api_error", code="internal_error")
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(EngineOverloaded, _overloaded)
    app.add_exception_handler(InvalidRequest, _invalid)
    app.add_exception_handler(UnknownAdapter, _unknown_adapter)
    app.add_exception_handler(EngineFailure, _engine_failure)
    app.add_exception_handler(Exception, _internal)
