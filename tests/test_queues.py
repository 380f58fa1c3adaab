"""Queues by cost: triage (detect) has its own queue and worker, so a sync detect is answered inline
while a long purification holds the GPU worker."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from impress.contract import JobKind
from impress.queue import JobQueue, worker_queues
from impress.settings import Settings
from tests.conftest import service_env, stop
from tests.support import TEST_REDIS_URL, answers, delete_prefix, free_port, photo, png_bytes, poll, wait_for


def test_detect_has_its_own_queue_and_a_default_worker_serves_all():
    settings = Settings(_env_file=None, queue="gpu", detect_queue="triage")
    queue = JobQueue(settings)
    assert {kind: queue.queue_for(kind) for kind in JobKind} == {
        **{kind: "gpu" for kind in JobKind}, JobKind.detect: "triage"}
    assert worker_queues(settings) == ["gpu", "triage"]  # webhooks have a worker of their own


@pytest.mark.e2e
def test_sync_detect_answers_inline_while_a_purification_runs(small_vae_dir, tmp_path):
    tag = f"impress-queues-{uuid.uuid4().hex[:8]}"
    env = service_env(tag, small_vae_dir, IMPRESS_DETECT_QUEUE=f"{tag}-detect", IMPRESS_MAX_ITERATIONS="100000")
    port = free_port()
    cli = [sys.executable, "-m", "cli"]
    procs = [subprocess.Popen(cli + ["worker", "--pool", "solo", "--queues", queue, "--hostname", f"{role}@%h"],
                              env=env, stdout=open(tmp_path / f"{role}.log", "w"), stderr=subprocess.STDOUT)
             for role, queue in (("gpu", tag), ("triage", f"{tag}-detect"))]
    procs.append(subprocess.Popen(cli + ["api", "--port", str(port)], env=env, stdout=open(tmp_path / "api.log", "w"),
                                  stderr=subprocess.STDOUT))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    png = png_bytes(photo(32, 32))
    try:
        wait_for(lambda: answers(client, "/readyz") and len(client.get("/readyz").json()["workers"]) == 2, 180,
                 "API ready with both workers answering", 0.5)
        # The triage worker loads its model at start, before any job (a minute on this busy 2-core box).
        wait_for(lambda: "detection model loaded" in (tmp_path / "triage.log").read_text(), 180,
                 "the triage worker warm", 0.5)
        long = client.post("/v1/purify", files=[("images", ("a.png", png, "image/png"))],
                           data={"iters": "100000", "early_stop": "false"}).headers["location"]
        poll(client, long, lambda j: j["state"] == "running" and j["progress"]["step"] >= 2, timeout=180)
        t0 = time.perf_counter()
        r = client.post("/v1/detect", files=[("images", ("b.png", png, "image/png"))])
        latency = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
        assert client.get(long).json()["state"] == "running"
        print(f"\nsync detect answered inline in {latency * 1000:.0f} ms while a purification ran "
              f"(timeout {Settings(_env_file=None).detect_sync_timeout_s:g} s, the default)")
        assert client.delete(long).status_code == 200
    finally:
        client.close()
        stop(*procs)
        delete_prefix(TEST_REDIS_URL, tag)
        print((tmp_path / "triage.log").read_text()[-2000:])
