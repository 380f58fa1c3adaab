"""Readiness, computed off the request path: /readyz answers the last report while it is at most
IMPRESS_READINESS_CACHE_S old; an older one is refreshed by one background task (the workers'
heartbeats read from Redis, a connection to the broker, in one thread) that every probe arriving
meanwhile awaits without holding a thread. However many probes arrive, they never take the threads
that serve the tenants' calls.

Ready means a job submitted now is queued and will be run: Redis and the broker reachable, and at
least one worker alive (its heartbeat not expired, busy or idle) with the models its jobs need. A
busy worker is ready: a probe must not take the API out of rotation while it does its work."""
from __future__ import annotations

import asyncio
import time
from typing import Optional

import anyio
import redis
from pydantic import BaseModel

from impress.contract import ModelReport
from impress.queue import JobQueue
from impress.store import JobStore


class ReadinessReport(BaseModel):
    ready: bool
    redis: bool
    broker: bool
    workers: list[str]                  # alive: their heartbeat has not expired
    queues: dict[str, list[str]]        # queue -> the alive workers that serve it
    models: dict[str, ModelReport]      # worker -> its model report (job workers only)


def check_readiness(store: JobStore, queue: JobQueue) -> ReadinessReport:
    """Redis and the broker reachable, and at least one worker alive with its models present (blocking)."""
    try:
        beats, redis_ok = store.live_workers(), True
    except redis.RedisError:
        beats, redis_ok = [], False
    queues: dict[str, list[str]] = {}
    for beat in beats:
        for name in beat.queues:
            queues.setdefault(name, []).append(beat.name)
    # Each worker checks at start that the models its jobs need are on its disk (`impress models check`).
    models = {beat.name: beat.models for beat in beats if beat.models is not None}
    broker_ok = queue.broker_reachable()
    return ReadinessReport(ready=redis_ok and broker_ok and any(report.complete for report in models.values()),
                           redis=redis_ok, broker=broker_ok, workers=[beat.name for beat in beats],
                           queues=dict(sorted(queues.items())), models=models)


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
