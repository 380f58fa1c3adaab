"""The FastAPI application: validates, stores, enqueues, reports. Never imports torch."""
from __future__ import annotations

import logging
from typing import Optional

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from impress.images import SUPPORTED_FORMATS, set_pillow_pixel_guard
from impress.jobspec import load_job_kinds
from impress.queue import JobQueue
from impress.settings import Settings, get_settings
from impress.ssrf import UrlGuards
from impress.store import JobStore, Retention
from impress.webhooks import WebhookNotifier

from .admission import Admission
from .auth import Authenticator, authorize
from .console import mount_console
from .errors import (STORE_ERRORS, ApiError, api_error_handler, error_responses, http_error_handler,
                     store_unavailable_handler, unhandled_error_handler, validation_error_handler)
from .guard import EdgeGuard
from .readiness import Readiness
from .request_id import RequestIdMiddleware
from .routes import events, health, jobs, webhook_secret
from .routes.kinds import submit_router

log = logging.getLogger("impress.api")

DESCRIPTION = f"""Purify and evaluate protective image perturbations (IMPRESS, NeurIPS 2023).

Submit images with `POST /v1/purify` (multipart), poll `GET /v1/jobs/{{id}}` or follow it live with
`GET /v1/jobs/{{id}}/events` (server-sent events, `Last-Event-ID` resumes), fetch each result PNG and its
signed manifest (`/results/{{i}}/manifest`; C2PA in the PNG). `Prefer: wait=N` on any job POST answers
200 with the finished job when it ends within N seconds. `expires_in` (seconds) on any job POST bounds how
long its data is kept (`expires_at`); `DELETE /v1/jobs/{{id}}/data` deletes it now; afterwards, and after
expiry, its URLs answer 410 `gone` to its owner.
Once the service has API keys, every /v1 call sends one: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
A job belongs to the key that created it; any other key gets 404 on its URLs. Each key's requests are
rate-limited (429 with `Retry-After` and `RateLimit-*` headers) and its unfinished jobs capped.
`Idempotency-Key` on a POST makes a retried submission return the same job.
Every error is `{{"error": {{"code", "message", "details"}}}}` with a stable `code`.
Images come as uploads (`images`) and/or URLs (`image_url`, fetched by the service: https, public
addresses only; one that fails is listed in the job's `rejected_inputs` with its own code). A
`webhook` URL is told of `webhook_events` (start, progress, completed), signed per Standard Webhooks.
Accepted formats: {", ".join(SUPPORTED_FORMATS)}."""


def create_app(settings: Optional[Settings] = None, *, store: Optional[JobStore] = None,
               queue: Optional[JobQueue] = None) -> FastAPI:
    """The app; `store` and `queue` default to the configured Redis and Celery (tests pass fakes)."""
    settings = settings or get_settings()
    set_pillow_pixel_guard(settings.max_pixels)
    app = FastAPI(title="IMPRESS service", version="0.1.0", description=DESCRIPTION)
    app.state.settings = settings
    app.state.store = store or JobStore.from_url(settings.redis_url, settings.key_prefix,
                                                 Retention.from_settings(settings))
    app.state.queue = queue or JobQueue(settings)
    app.state.auth = Authenticator(settings, app.state.store.r)
    # A cancel of a queued job is its last transition: the API sends that job's `completed` webhook.
    app.state.store.events = WebhookNotifier(app.state.queue.send_webhook, settings.webhook_progress_every_s)
    app.state.url_guards = UrlGuards.from_settings(settings)
    app.state.readiness = Readiness(app.state.store, app.state.queue, settings.readiness_cache_s)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for error in STORE_ERRORS:  # routes, sync ones in the thread pool included
        app.add_exception_handler(error, store_unavailable_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)  # anything else, middleware included
    app.state.admission = admission = Admission(settings.max_inflight_submits)
    submit_routers = [submit_router(spec) for spec in load_job_kinds(settings.job_kind_modules)]
    # each reads Redis: 503 when it is down
    for router in (*submit_routers, jobs.router, events.router, webhook_secret.router):
        app.include_router(router, dependencies=[Depends(authorize)], responses=error_responses(401, 429, 503))
    app.include_router(health.router)
    mount_console(app)
    app.add_middleware(EdgeGuard, settings=settings, auth=app.state.auth, admission=admission)
    app.add_middleware(RequestIdMiddleware)  # outermost: every line of a request, the access log's too, has its id
    return app
