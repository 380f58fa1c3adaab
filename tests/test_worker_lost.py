"""A killed worker process loses no job: late acks + reject-on-worker-lost deliver it again, the
job record counts the attempt (prefork pool, as in production), and its `completed` webhook is
delivered exactly once (a webhook worker on its own queue, a loopback receiver)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from impress.contract import TASK_JOB, JobKind, JobState, PurifyParams
from impress.queue import make_celery
from impress.records import InputImage, WebhookTarget
from impress.settings import Settings
from impress.store import JobStore
from tests.loopback import WEBHOOK_SECRET, WebhookReceiver
from tests.support import TEST_REDIS_URL, broker_env, delete_prefix, photo, png_bytes, wait_for


@pytest.fixture
def prefork_worker(small_vae_dir, tmp_path):
    tag = uuid.uuid4().hex[:8]
    # One torch thread per worker: on a 2-core machine shared with the test process, more threads
    # oversubscribe the cores and slow tiny models by orders of magnitude.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMPRESS_REDIS_URL": TEST_REDIS_URL, "IMPRESS_KEY_PREFIX": f"impress-lost-{tag}",
           "IMPRESS_QUEUE": f"impress-lost-{tag}", "IMPRESS_VAE": str(small_vae_dir), "IMPRESS_PERCEPTUAL": "dssim",
           "IMPRESS_DEVICE": "cpu", "IMPRESS_PROGRESS_EVERY": "2", "IMPRESS_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "IMPRESS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", **broker_env()}
    settings = Settings(_env_file=None, **{k[8:].lower(): v for k, v in env.items() if k.startswith("IMPRESS_")})
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--pool", "prefork", "--concurrency", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    webhooks = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--pool", "solo", "--queues", "webhooks"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.result_ttl_s)
    celery = make_celery(settings)
    try:
        wait_for(lambda: len(celery.control.ping(timeout=0.5)) == 2, 60, "both workers answering", 0.5)
        yield worker, store, celery, settings
    finally:
        for proc in (worker, webhooks):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        delete_prefix(TEST_REDIS_URL, f"impress-lost-{tag}")
        print((tmp_path / "worker.log").read_text()[-3000:])


@pytest.mark.e2e
def test_killed_worker_process_job_runs_again(prefork_worker):
    worker, store, celery, settings = prefork_worker
    data = png_bytes(photo(32, 32))
    params = PurifyParams(preset="photoguard", iters=200, lr=0.005, alpha=0.01, delta=0.05, noise=0.05, early_stop=False)
    with WebhookReceiver() as receiver:
        job_id = store.create(JobKind.purify, params, [InputImage(name="a.png", blob=store.put_blob(data), width=32,
                                                                  height=32, format="PNG")],
                              vae=settings.vae, perceptual="dssim",
                              webhook=WebhookTarget(url=receiver.url, jobs_url="http://api.test/v1/jobs")).id
        celery.send_task(TASK_JOB, args=[job_id], queue=settings.queue)
        wait_for(lambda: (store.get(job_id).progress_step >= 4), 60, "the job running")
        children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
        assert children, "prefork pool has a child process"
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        record = wait_for(lambda: (lambda r: r if r.state.finished else None)(store.get(job_id)),
                          300, "the job finishing after the kill")
        assert record.state == JobState.succeeded, record
        assert record.attempts == 2
        assert record.result.images[0].iterations == 200
        wait_for(lambda: receiver.of_type("job.completed"), 60, "the completed webhook")
        time.sleep(1.0)   # room for a duplicate, were one to come
    (completed,) = receiver.of_type("job.completed")
    assert completed.payload.data.attempts == 2 and completed.payload.data.state == JobState.succeeded
