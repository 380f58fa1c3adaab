"""Readiness, computed off the request path: /readyz answers the last report while it is at most
IMPRESS_READINESS_CACHE_S old; an older one is refreshed by one background task (a Redis ping, a
Celery ping that waits up to 1 s for workers, their model reports, in one thread) that every probe
arriving meanwhile awaits without holding a thread. However many probes arrive, they never take the
threads that serve the tenants' calls."""
from __future__ import annotations

import asyncio
import time
from typing import Optional

import anyio
from pydantic import BaseModel

from impress.contract import ModelReport
from impress.queue import JobQueue
from impress.store import JobStore


class ReadinessReport(BaseModel):
    ready: bool
    redis: bool
    workers: list[str]
    models: dict[str, ModelReport]


def check_readiness(store: JobStore, queue: JobQueue) -> ReadinessReport:
    """Redis reachable and at least one worker answering with its models present (blocking)."""
    redis_ok = store.ping()
    workers = queue.workers() if redis_ok else []
    # Each worker checks at start that the models its jobs need are on its disk (`impress models check`).
    models = store.worker_models(workers) if workers else {}
    return ReadinessReport(ready=redis_ok and any(report.complete for report in models.values()),
                           redis=redis_ok, workers=workers, models=models)


class Readiness:
    def __init__(self, store: JobStore, queue: JobQueue, max_age_s: float):
        self.store, self.queue, self.max_age_s = store, queue, max_age_s
        self.report: Optional[ReadinessReport] = None
        self.checked_at = float("-inf")
        self.refreshing: Optional[asyncio.Task] = None

    async def current(self) -> ReadinessReport:
        """The last report, or, when it is stale, the one shared refresh's."""
        if self.report is not None and time.monotonic() - self.checked_at <= self.max_age_s:
            return self.report
        loop = asyncio.get_running_loop()
        if self.refreshing is None or self.refreshing.get_loop() is not loop:
            self.refreshing = loop.create_task(self._refresh())
        return await asyncio.shield(self.refreshing)

    async def _refresh(self) -> ReadinessReport:
        try:
            report = await anyio.to_thread.run_sync(check_readiness, self.store, self.queue)
            self.report, self.checked_at = report, time.monotonic()
            return report
        finally:
            self.refreshing = None
