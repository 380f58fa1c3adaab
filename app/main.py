"""The FastAPI application: validates, stores, enqueues, reports. Never imports torch."""
from __future__ import annotations

import logging
import time
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from impress.contract import ErrorCode
from impress.images import SUPPORTED_FORMATS, set_pillow_pixel_guard
from impress.queue import make_celery
from impress.settings import Settings
from impress.store import JobStore

from .errors import ApiError, api_error_handler, error_json, validation_error_handler
from .metrics import REQUEST_SECONDS
from .routes import health, jobs

log = logging.getLogger("impress.api")

DESCRIPTION = f"""Purify and evaluate protective image perturbations (IMPRESS, NeurIPS 2023).

Submit images with `POST /v1/purify` (multipart), poll `GET /v1/jobs/{{id}}`, fetch each result PNG.
Every error is `{{"error": {{"code", "message", "details"}}}}` with a stable `code`.
Accepted formats: {", ".join(SUPPORTED_FORMATS)}."""


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or Settings()
    set_pillow_pixel_guard(settings.max_pixels)
    app = FastAPI(title="IMPRESS service", version="0.1.0", description=DESCRIPTION)
    app.state.settings = settings
    app.state.store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.result_ttl_s)
    app.state.celery = make_celery(settings)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    # Room for the largest allowed job plus multipart overhead; anything bigger is refused unread.
    max_body = settings.max_upload_bytes * settings.max_images_per_job + 1024 * 1024
    # Submissions in progress (the event loop is one thread: a plain int is safe). Past the limit a
    # client gets a fast 503 to retry, instead of a place in a queue that grows without bound.
    app.state.inflight_submits = 0

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        start = time.perf_counter()
        length = request.headers.get("content-length")
        submit = request.method == "POST"
        if length is not None and length.isdigit() and int(length) > max_body:
            response = error_json(413, ErrorCode.payload_too_large, f"request body is {length} bytes; "
                                  f"the limit is {max_body}")
        elif submit and app.state.inflight_submits >= settings.max_inflight_submits:
            response = error_json(503, ErrorCode.service_overloaded, f"{app.state.inflight_submits} submissions "
                                  "are in progress, the most this service takes at once; retry shortly")
            response.headers["Retry-After"] = "1"
        else:
            app.state.inflight_submits += submit
            try:
                response = await call_next(request)
            finally:
                app.state.inflight_submits -= submit
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(request.method, getattr(route, "path", "unmatched"),
                               str(response.status_code)).observe(time.perf_counter() - start)
        return response

    app.include_router(jobs.router)
    app.include_router(health.router)
    return app
