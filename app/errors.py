"""One error envelope for every 4xx/5xx: {"error": {"code": <stable code>, "message": ..., "details": ...}}."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from impress.contract import ErrorCode
from impress.views import ErrorBody, ErrorResponse  # the envelope, shared with impress.client


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


# Declared on routes so the OpenAPI document shows the envelope.
def error_responses(*statuses: int) -> dict:
    return {s: {"model": ErrorResponse} for s in statuses}
