"""Prometheus metrics an operator scrapes at /metrics."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_SUBMITTED = Counter("impress_jobs_submitted_total", "jobs accepted", ["kind"])
UPLOADS_REJECTED = Counter("impress_uploads_rejected_total", "uploads refused before queueing", ["code"])
REQUEST_SECONDS = Histogram("impress_http_request_seconds", "HTTP request latency", ["method", "route", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
