"""Cancel stops a running job of any kind within seconds and frees the worker: the runner turns the
reporter's Canceled into the `canceled` state (a real worker, real Redis, real HTTP)."""
from __future__ import annotations

import time

import pytest

from tests.support import photo, png_bytes, poll

pytestmark = pytest.mark.e2e

FINISHED = ("succeeded", "failed", "canceled")


def png(name: str, seed: int = 0):
    return (name, png_bytes(photo(32, 32, seed)), "image/png")


def cancel_while_running(service, location: str) -> dict:
    """Cancel the job once it runs and reports progress; the job once it stopped, within 15 s."""
    poll(service, location, lambda j: j["state"] == "running" and j["progress"]["step"] > 0, timeout=120)
    assert service.delete(location).status_code == 200
    canceled_at = time.monotonic()
    job = poll(service, location, lambda j: j["state"] in FINISHED, timeout=15)
    assert job["state"] == "canceled" and time.monotonic() - canceled_at < 15, job
    return job


def next_job_runs(service) -> None:
    r = service.post("/v1/purify", files=[("images", png("next.png"))], data={"iters": "2"})
    job = poll(service, r.headers["location"], lambda j: j["state"] in FINISHED, timeout=60)
    assert job["state"] == "succeeded", job


def test_a_running_evaluation_is_canceled_and_the_next_job_starts(service):
    r = service.post("/v1/evaluate", files=[("clean", png("a.png")), ("clean", png("b.png", 1))],
                     data={"protections": ["photoguard-8:steps=100000"], "purifiers": ["jpeg"], "size": "32"})
    assert r.status_code == 202, r.text
    job = cancel_while_running(service, r.headers["location"])
    assert job["progress"]["step"] < job["progress"]["total"]
    next_job_runs(service)


def test_a_running_protection_is_canceled_and_the_next_job_starts(service):
    r = service.post("/v1/protect", files=[("images", png("a.png"))], data={"protection": "glaze-like:steps=100000"})
    assert r.status_code == 202, r.text
    job = cancel_while_running(service, r.headers["location"])
    assert job["progress"]["step"] < job["progress"]["total"] == 100000
    next_job_runs(service)
