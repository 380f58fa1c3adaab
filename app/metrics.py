"""Prometheus metrics an operator scrapes at /metrics.

This process's own (requests, submissions, rejections) live in prometheus_client's registry. The
service-wide ones (jobs finished by every worker, compute time, optimisation steps, queue depth)
are read from Redis at each scrape, so any API replica reports the same totals.
"""
from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from impress.store import WEBHOOK_STATS, JobStore

JOBS_SUBMITTED = Counter("impress_jobs_submitted_total", "jobs accepted", ["kind"])
UPLOADS_REJECTED = Counter("impress_uploads_rejected_total", "uploads refused before queueing", ["code"])
REQUEST_SECONDS = Histogram("impress_http_request_seconds", "HTTP request latency", ["method", "route", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
# The methods a label may name: any other token a client sends is counted as `other`, so made-up
# methods cannot grow /metrics (routes are labelled by their matched template, or `unmatched`).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class ServiceCollector:
    """The service-wide metrics, read from Redis (contract.Keys.stats and the Celery queue)."""

    def __init__(self, store: JobStore, queues: list[str]):
        self.store, self.queues = store, queues

    def collect(self):
        up = GaugeMetricFamily("impress_redis_up", "whether Redis answered this scrape")
        try:
            stats, waiting = self.store.stats(), {q: self.store.queue_length(q) for q in self.queues}
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = CounterMetricFamily("impress_job_transitions", "jobs that entered each state (a job redelivered "
                                   "after its worker died enters running again)", labels=["kind", "state"])
        seconds = CounterMetricFamily("impress_job_compute_seconds", "compute time of succeeded jobs", labels=["kind"])
        steps = CounterMetricFamily("impress_job_image_iterations",
                                    "optimisation steps times images of succeeded jobs", labels=["kind"])
        webhooks = CounterMetricFamily("impress_webhook_deliveries", "webhook delivery attempts by outcome "
                                       "(delivered, retry, gave_up)", labels=["outcome"])
        for key, value in sorted(stats.items()):
            kind, _, what = key.partition(":")
            if kind == WEBHOOK_STATS:
                webhooks.add_metric([what], value)
            elif what == "seconds":
                seconds.add_metric([kind], value)
            elif what == "image_iterations":
                steps.add_metric([kind], value)
            else:
                jobs.add_metric([kind, what], value)
        yield from (jobs, seconds, steps, webhooks)
        if waiting:
            queued = GaugeMetricFamily("impress_queue_messages", "job messages waiting in each queue", labels=["queue"])
            for queue, messages in waiting.items():
                queued.add_metric([queue], messages)
            yield queued


def service_registry(store: JobStore, queues: list[str]) -> CollectorRegistry:
    """queues: the Celery queues whose lengths the job store's Redis holds; none when the broker is
    elsewhere (RabbitMQ: its own metrics, or KEDA's RabbitMQ scaler, give the queue lengths)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(store, queues))
    return registry
