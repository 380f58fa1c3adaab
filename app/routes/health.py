"""Liveness, readiness and metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from impress.queue import worker_queues

from ..deps import SettingsDep, StoreDep
from ..errors import UNAVAILABLE_RETRY_AFTER_S, error_responses
from ..metrics import service_registry

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the API process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis and the broker reachable and at least one worker alive (its heartbeat "
                               "seen, busy or idle) with its models present (checked in the background, at most "
                               "IMPRESS_READINESS_CACHE_S old)",
            responses={503: {"description": "not ready (the same report, with Retry-After)"}})
async def readyz(request: Request) -> JSONResponse:
    report = await request.app.state.readiness.current()
    if report.ready:
        return JSONResponse(report.model_dump(mode="json"))
    return JSONResponse(status_code=503, content=report.model_dump(mode="json"),
                        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


@router.get("/metrics", summary="Prometheus metrics: this process's and the service's (from Redis)",
            response_class=Response, responses=error_responses(401))
def metrics(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    if settings.metrics_require_key:
        request.app.state.auth.identify(request)
    body = generate_latest() + generate_latest(
        service_registry(store, [*worker_queues(settings), settings.webhook_queue] if settings.broker_is_store else []))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
