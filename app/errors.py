"""One error envelope for every 4xx/5xx: {"error": {"code": <stable code>, "message": ..., "details": ...}}."""
from __future__ import annotations

import logging
from typing import Any, Optional

import redis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from impress.contract import ErrorCode
from impress.views import ErrorBody, ErrorResponse  # the envelope, shared with impress.client

log = logging.getLogger("impress.api")

# Redis unreachable, as the store (redis-py) and the queue (kombu, sending a task) report it.
STORE_ERRORS = (redis.RedisError, OperationalError)
# Seconds a client should wait before retrying when the job store is unreachable.
UNAVAILABLE_RETRY_AFTER_S = 5


class ApiError(Exception):
    def __init__(self, status: int, code: ErrorCode, message: str, details: Any = None,
                 headers: Optional[dict[str, str]] = None):
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


def error_json(status: int, code: ErrorCode, message: str, details: Any = None,
               headers: Optional[dict[str, str]] = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"), headers=headers)


async def api_error_handler(_: Request, exc: ApiError) -> JSONResponse:
    return error_json(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]} for e in exc.errors()]
    # Parameters (form fields, query) are invalid_parameter; a malformed body is invalid_request.
    code = ErrorCode.invalid_parameter if all(e["loc"][0] in ("body", "query", "path") for e in exc.errors()) \
        else ErrorCode.invalid_request
    summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
    return error_json(422, code, summary, errors)


# The router's own refusals (no such URL, a method the URL lacks), in the envelope like every error.
HTTP_CODES = {404: ErrorCode.not_found, 405: ErrorCode.method_not_allowed, 408: ErrorCode.request_timeout,
              413: ErrorCode.payload_too_large}


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of every route at this path, not only the first route's
        allowed = {m for route in request.app.router.routes
                   if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
                   for m in route.methods or ()}
        headers["Allow"] = ", ".join(sorted(allowed))
    return error_json(exc.status_code, HTTP_CODES.get(exc.status_code, ErrorCode.invalid_request), str(exc.detail),
                      headers=headers)


def unavailable_json() -> JSONResponse:
    response = error_json(503, ErrorCode.service_unavailable, "the job store is unreachable; retry shortly")
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    return response


async def store_unavailable_handler(_: Request, exc: Exception) -> JSONResponse:
    """Redis down (or the broker refusing a message): 503 to retry, in the envelope, never a bare 500."""
    log.warning("job store unreachable: %s: %s", type(exc).__name__, exc)
    return unavailable_json()


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Last resort for errors outside the routes (middleware included): still the envelope."""
    if isinstance(exc, STORE_ERRORS):
        return await store_unavailable_handler(request, exc)
    return error_json(500, ErrorCode.internal_error, "internal error; it has been logged")


# Declared on routes so the OpenAPI document shows the envelope.
def error_responses(*statuses: int) -> dict:
    return {s: {"model": ErrorResponse} for s in statuses}
