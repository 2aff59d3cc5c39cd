"""Exception handlers: every error leaves as ``{"error": {"code", "message"}}``.

Statuses come from the one table in :mod:`app.errors`; unknown exceptions are logged in full
and answered with a generic 500 that says nothing internal.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import InternalError, InvalidParameter, ServiceError, code_for_status, status_of
from app.request_log import note_error, request_id_headers

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The answer to ``exc``: its status from the one table, ``Retry-After`` when it has one."""
    headers = dict(exc.headers)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return error_response(status_of(exc), exc.code, exc.message, headers)


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "header", "body")]
        name = ".".join(loc) or "request"
        given = f" (got {err['input']!r})" if "input" in err and err["input"] is not None else ""
        parts.append(f"{name}: {err['msg']}{given}")
    return "; ".join(parts)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    note_error(request, exc.code)
    return service_error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = InvalidParameter(_describe_validation(list(exc.errors())))
    note_error(request, error.code)
    return service_error_response(error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = code_for_status(exc.status_code)
    note_error(request, code)
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Sent by Starlette's outermost middleware, past the request log's: add the id here.
    error = InternalError(
        "the service failed to handle this request", headers=request_id_headers(request)
    )
    return service_error_response(error)


def register(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
