"""Celery tasks: thin wrappers that hand a job id to worker.jobs.run_job.

Start a worker with `impress worker` (prefork, one process per GPU). Models load lazily inside the
child process on its first job and stay cached there, so no CUDA is touched before the fork.
Task messages carry the job id only; inputs and results are blobs in Redis.
"""
from __future__ import annotations

import functools
import logging
import threading

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from impress.contract import TASK_DETECT, TASK_EVALUATE, TASK_PURIFY
from impress.images import set_pillow_pixel_guard
from impress.queue import make_celery
from impress.settings import get_settings
from impress.store import JobStore

from .jobs import run_job, warm_up_detection

settings = get_settings()
celery_app = make_celery(settings)
set_pillow_pixel_guard(settings.max_pixels)
logging.getLogger("impress").setLevel(logging.INFO)


@functools.lru_cache(maxsize=1)
def job_store() -> JobStore:
    return JobStore.from_url(settings.redis_url, settings.key_prefix, settings.result_ttl_s)


def _run(job_id: str) -> str:
    return run_job(job_store(), settings, job_id, on_time_limit=SoftTimeLimitExceeded)


purify = celery_app.task(name=TASK_PURIFY)(_run)
detect = celery_app.task(name=TASK_DETECT)(_run)
evaluate = celery_app.task(name=TASK_EVALUATE)(_run)



@worker_process_init.connect
def _warm_up(**_) -> None:
    # A worker that serves triage loads its model at start (-Q is applied by now), in the pool
    # process (CUDA after the fork) and in the background (a pool process must report up quickly).
    if settings.detect_queue in celery_app.amqp.queues.consume_from:
        threading.Thread(target=warm_up_detection, args=(settings,), name="warm-up", daemon=True).start()
