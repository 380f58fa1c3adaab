"""The Celery application both sides share: the API only sends by task name, workers register the
tasks (worker/tasks.py). Settings come from impress.settings, nothing else."""
from __future__ import annotations

from celery import Celery

from .contract import TASK_JOB, TASK_WEBHOOK
from .jobspec import QueueClass, job_spec
from .settings import Settings
from .store import Keys
from .webhooks import WebhookDelivery


def make_celery(settings: Settings) -> Celery:
    amqp = settings.broker.startswith(("amqp:", "pyamqp:"))
    app = Celery("impress", broker=settings.broker)
    app.conf.update(
        task_acks_late=True,                 # ack after the task ran: a killed worker's job is redelivered
        task_reject_on_worker_lost=True,     # ... and requeued when the child process dies
        worker_prefetch_multiplier=1,        # a GPU worker holds one job, the rest wait in the queue
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        broker_transport_options=_transport_options(settings, amqp),
        task_ignore_result=True,             # the job record holds the outcome; Celery keeps none
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_default_queue=settings.queue,
        # Redis gone: workers and publishers keep reconnecting (never give up), so both resume by
        # themselves when it returns; a publish fails after a short bounded retry (the API answers 503).
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        task_track_started=False,            # our own job record tracks state
    )
    if amqp:
        # Quorum queues are replicated across the RabbitMQ cluster (a node loss keeps queued jobs);
        # queues named by `impress worker -Q` are declared the same way. Their exchanges are topic
        # exchanges: Celery's native delayed delivery (webhook retries with a countdown) needs them,
        # else a worker would hold a delayed task until its time comes.
        app.conf.update(task_default_queue_type="quorum", task_create_missing_queue_type="quorum",
                        task_default_exchange_type="topic", task_create_missing_queue_exchange_type="topic")
    return app


def _transport_options(settings: Settings, amqp: bool) -> dict:
    if amqp:
        # Publisher confirms: a submission returns once the broker holds the message. RabbitMQ
        # redelivers a job as soon as its worker's connection drops.
        return {"confirm_publish": True}
    # Redis redelivers an unacked message after the visibility timeout: keep it above the hard
    # limit so a long, healthy job is never run twice (a worker host that vanishes without closing
    # its connection holds its job that long).
    # Celery's own keys (queues, unacked messages, bindings) live under the service's prefix too,
    # so one Redis can hold several deployments, and a test deletes exactly what it made.
    return {"visibility_timeout": settings.hard_time_limit_s + 600,
            "global_keyprefix": Keys(settings.key_prefix).celery_prefix()}


def queues(settings: Settings) -> dict[QueueClass, str]:
    """The queue of each class of work: the GPU queue, and triage's light queue of its own."""
    return {"gpu": settings.queue, "triage": settings.detect_queue}


def queue_for(settings: Settings, kind: str) -> str:
    """Routing by cost, in one place: each kind's JobSpec names its queue class."""
    return queues(settings)[job_spec(kind).queue]


def worker_queues(settings: Settings) -> list[str]:
    """What a worker serves when it names no queues: every job queue, GPU work and triage (one worker
    runs every job of a small setup). Webhooks always have their own worker (never a GPU loop)."""
    return list(dict.fromkeys(queues(settings).values()))


class JobQueue:
    """Sends jobs to the workers by id and checks the broker: what the API needs of Celery."""

    def __init__(self, settings: Settings, celery: Celery | None = None):
        self.settings = settings
        self.celery = celery or make_celery(settings)

    def queue_for(self, kind: str) -> str:
        return queue_for(self.settings, kind)

    def send(self, kind: str, job_id: str) -> None:
        """One task for every kind: the worker finds the kind in the record."""
        self.celery.send_task(TASK_JOB, args=[job_id], queue=self.queue_for(kind))

    def send_webhook(self, delivery: WebhookDelivery) -> None:
        """Webhooks go to their own queue: a light worker does the HTTP, never a GPU worker's loop."""
        self.celery.send_task(TASK_WEBHOOK, args=[delivery.model_dump(mode="json")],
                              queue=self.settings.webhook_queue)

    def broker_reachable(self, timeout_s: float = 1.0) -> bool:
        """Whether a job could be queued now: a connection to the broker opens (no retry)."""
        try:
            with self.celery.connection_for_write(connect_timeout=timeout_s) as connection:
                connection.ensure_connection(max_retries=0)
            return True
        except Exception:  # whatever the transport raises means "unreachable", never a crash of the caller
            return False
