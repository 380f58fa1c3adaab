"""Celery tasks: thin wrappers that hand a job id to worker.jobs.

Start a worker with `impress worker` (prefork, one process per GPU). Models load lazily inside the
child process on its first job and stay cached there, so no CUDA is touched before the fork.
"""
from __future__ import annotations

import functools
import logging

from celery.exceptions import SoftTimeLimitExceeded

from impress.contract import TASK_PURIFY
from impress.images import set_pillow_pixel_guard
from impress.queue import make_celery
from impress.settings import get_settings
from impress.store import JobStore

from .jobs import run_purify_job

settings = get_settings()
celery_app = make_celery(settings)
set_pillow_pixel_guard(settings.max_pixels)
logging.getLogger("impress").setLevel(logging.INFO)


@functools.lru_cache(maxsize=1)
def job_store() -> JobStore:
    return JobStore.from_url(settings.redis_url, settings.key_prefix, settings.result_ttl_s)


@celery_app.task(name=TASK_PURIFY)
def purify(job_id: str) -> str:
    return run_purify_job(job_store(), settings, job_id, on_time_limit=SoftTimeLimitExceeded)
