"""The Celery broker can be another server than the Redis of job records (IMPRESS_BROKER_URL)."""
from __future__ import annotations

from prometheus_client import generate_latest

from app.metrics import service_registry
from impress.contract import JobKind
from impress.queue import JobQueue, make_celery
from impress.settings import Settings
from impress.store import JobStore

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_broker_defaults_to_the_redis_of_job_records():
    settings = Settings(_env_file=None, redis_url="redis://store:6379/2")
    assert settings.broker == "redis://store:6379/2" and settings.broker_is_store
    celery = make_celery(settings)
    assert celery.conf.broker_url == "redis://store:6379/2"
    assert celery.conf.broker_transport_options["visibility_timeout"] == settings.hard_time_limit_s + 600
    assert celery.conf.task_default_queue_type == "classic"


def test_rabbitmq_broker_gets_quorum_queues_and_publisher_confirms():
    settings = Settings(_env_file=None, redis_url="redis://store:6379/2", broker_url=AMQP)
    assert settings.broker == AMQP and not settings.broker_is_store
    celery = make_celery(settings)
    assert celery.conf.broker_url == AMQP
    assert celery.conf.broker_transport_options == {"confirm_publish": True}
    assert (celery.conf.task_default_queue_type, celery.conf.task_create_missing_queue_type) == ("quorum", "quorum")
    assert celery.conf.task_default_exchange_type == "topic"  # native delayed delivery (retries with countdown)


def test_queue_length_metric_only_where_redis_holds_the_queue(fake_redis):
    store = JobStore(fake_redis, "impress-broker", 3600)
    fake_redis.rpush(store.keys.celery_prefix() + "jobs", b"a", b"b")
    assert b'impress_queue_messages{queue="jobs"} 2.0' in generate_latest(service_registry(store, ["jobs"]))
    elsewhere = generate_latest(service_registry(store, []))
    assert b"impress_queue_messages" not in elsewhere and b"impress_redis_up 1.0" in elsewhere


def test_detect_jobs_go_to_the_triage_queue_when_one_is_set():
    default = JobQueue(Settings(_env_file=None, queue="gpu"))
    assert {kind: default.queue_for(kind) for kind in JobKind} == {
        kind: "impress-detect" if kind is JobKind.detect else "gpu" for kind in JobKind}
    split = JobQueue(Settings(_env_file=None, queue="gpu", detect_queue="triage"))
    assert {kind: split.queue_for(kind) for kind in JobKind} == {
        kind: "triage" if kind is JobKind.detect else "gpu" for kind in JobKind}


def test_a_webhook_worker_has_a_node_name_of_its_own():
    """RabbitMQ gives a node name's control queue to one connection: a webhook worker beside a job
    worker on one host must not share `celery@host`."""
    from argparse import Namespace

    from cli.service import worker_argv

    def argv(queues):
        return worker_argv(Namespace(queues=queues, concurrency=1, pool="solo", hostname=None))

    assert argv("webhooks")[-2:] == ["--hostname", "webhooks@%h"]
    assert "--hostname" not in argv(None) and "--hostname" not in argv("impress")
