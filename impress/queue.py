"""The Celery application both sides share: the API only sends by task name, workers register the
tasks (worker/tasks.py). Settings come from impress.settings, nothing else."""
from __future__ import annotations

from celery import Celery

from .settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("impress", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_acks_late=True,                 # ack after the task ran: a killed worker's job is redelivered
        task_reject_on_worker_lost=True,     # ... and requeued when the child process dies
        worker_prefetch_multiplier=1,        # a GPU worker holds one job, the rest wait in the queue
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        # Redis redelivers an unacked message after the visibility timeout: keep it above the hard
        # limit so a long, healthy job is never run twice.
        broker_transport_options={"visibility_timeout": settings.hard_time_limit_s + 600},
        result_expires=settings.result_ttl_s,
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_track_started=False,            # our own job record tracks state
    )
    return app
