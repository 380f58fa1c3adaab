"""Celery tasks: one task for every job kind, a thin wrapper that hands the job id to
worker.runner.run_job (which finds the kind's JobSpec in the record), and the webhook delivery.

Start a worker with `impress worker` (prefork, one process per GPU). Models load lazily inside the
child process on its first job and stay cached there, so no CUDA is touched before the fork.
Task messages carry the job id only; inputs and results are blobs in Redis. Webhook deliveries are
tasks too, on their own queue (`impress worker --queues webhooks`): that worker never imports torch.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Optional

import redis
from celery import bootsteps
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import setup_logging, worker_process_init

from impress.contract import PRESETS, TASK_JOB, TASK_WEBHOOK, ModelReport, WorkerBeat
from impress.images import set_pillow_pixel_guard
from impress.jobspec import load_job_kinds
from impress.logs import configure_logging
from impress.queue import JobQueue, make_celery
from impress.settings import get_settings
from impress.store import JobStore, Retention
from impress.webhooks import DeliveryOutcome, WebhookDelivery, WebhookNotifier, deliver, retry_delay

from .heartbeat import Heartbeat

settings = get_settings()
load_job_kinds(settings.job_kind_modules)   # before anything reads a record of a registered kind
celery_app = make_celery(settings)
set_pillow_pixel_guard(settings.max_pixels)
logging.getLogger("impress").setLevel(logging.INFO)
log = logging.getLogger("impress.worker")


@setup_logging.connect
def _configure_logging(**_) -> None:
    """Celery's logging set up as every process's is (IMPRESS_LOG_FORMAT, request and job ids)."""
    configure_logging(settings.log_format)


@functools.lru_cache(maxsize=1)
def job_store() -> JobStore:
    events = WebhookNotifier(JobQueue(settings, celery_app).send_webhook, settings.webhook_progress_every_s)
    return JobStore.from_url(settings.redis_url, settings.key_prefix, Retention.from_settings(settings), events)


@celery_app.task(name=TASK_JOB)
def run(job_id: str) -> str:
    from .runner import run_job   # here, not at import: the webhook worker loads no torch

    return run_job(job_store(), settings, job_id, on_time_limit=SoftTimeLimitExceeded)


def model_report(queues: set[str]) -> Optional[ModelReport]:
    """At start, before taking jobs: are the models this worker's jobs need on its disk? Logged, and
    carried by its heartbeat for /readyz (a worker without them still beats, so the operator sees
    why). A worker of webhook deliveries only needs no model (and loads no torch)."""
    if queues and queues <= {settings.webhook_queue}:
        return None
    from impress.pipelines import configured_pipelines

    from .engine.model_cache import check

    report = check(list(PRESETS), settings.vae, settings.perceptual, configured_pipelines(settings))
    for line in report.missing:
        log.error("model missing: %s (run `impress models pull`)", line)
    log.info("models: %d present, %d missing", len(report.present), len(report.missing))
    return report


class HeartbeatStep(bootsteps.StartStopStep):
    """The worker's heartbeat (worker/heartbeat.py), started after its pool and stopped after its
    consumer by Celery's worker blueprint, whatever the pool (solo included)."""

    requires = {"celery.worker.components:Pool"}

    def create(self, worker) -> Heartbeat:
        queues = sorted(worker.app.amqp.queues.consume_from or ())   # -Q is applied by now
        beat = WorkerBeat(name=worker.hostname, queues=queues, models=model_report(set(queues)))
        # A store of its own: no connection pool the pool processes (forked later) use is ever held by this thread.
        store = JobStore.from_url(settings.redis_url, settings.key_prefix, Retention.from_settings(settings))
        return Heartbeat(store, beat, settings.worker_heartbeat_s)


celery_app.steps["worker"].add(HeartbeatStep)


# Each attempt has its own deadline (webhook_timeout_s); the time limits stop a task stuck anyway (the
# soft one must also stay under the hard one, which the jobs' 3 h default would not).
@celery_app.task(name=TASK_WEBHOOK, bind=True, max_retries=settings.webhook_max_retries,
                 soft_time_limit=settings.webhook_timeout_s + 5, time_limit=settings.webhook_timeout_s * 2 + 10)
def webhook(self, delivery: dict) -> str:
    outcome = deliver(WebhookDelivery.model_validate(delivery), settings)
    try:
        job_store().count_webhook(outcome.value)
    except redis.RedisError as exc:   # a lost count must not lose the retry
        log.warning("webhook outcome not counted: %s", exc)
    if outcome is DeliveryOutcome.retry and self.request.retries < self.max_retries:
        raise self.retry(countdown=retry_delay(self.request.retries, settings.webhook_retry_base_s))
    return outcome.value


@worker_process_init.connect
def _warm_up(**_) -> None:
    # A worker that serves triage loads its model at start (-Q is applied by now), in the pool
    # process (CUDA after the fork) and in the background (a pool process must report up quickly).
    if settings.detect_queue in celery_app.amqp.queues.consume_from:
        from .handlers.detect import warm_up

        threading.Thread(target=warm_up, args=(settings,), name="warm-up", daemon=True).start()
