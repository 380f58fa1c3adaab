"""Liveness, readiness and metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from impress.queue import worker_queues

from ..deps import QueueDep, SettingsDep, StoreDep
from ..errors import error_responses
from ..metrics import service_registry

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the API process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis reachable and at least one worker answering with its models present",
            responses={503: {"description": "not ready"}})
def readyz(store: StoreDep, queue: QueueDep) -> JSONResponse:
    redis_ok = store.ping()
    workers = queue.workers() if redis_ok else []
    # Each worker checks at start that the models its jobs need are on its disk (`impress models check`).
    models = store.worker_models(workers) if workers else {}
    ready = redis_ok and any(report.complete for report in models.values())
    return JSONResponse(status_code=200 if ready else 503,
                        content={"ready": ready, "redis": redis_ok, "workers": workers,
                                 "models": {name: report.model_dump() for name, report in models.items()}})


@router.get("/metrics", summary="Prometheus metrics: this process's and the service's (from Redis)",
            response_class=Response, responses=error_responses(401))
def metrics(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    if settings.metrics_require_key:
        request.app.state.auth.identify(request)
    body = generate_latest() + generate_latest(
        service_registry(store, [*worker_queues(settings), settings.webhook_queue] if settings.broker_is_store else []))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
