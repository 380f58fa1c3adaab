"""Faults answered cleanly, in-process: Redis down is a 503 to retry on every endpoint; a job whose
loss goes non-finite, that runs out of memory or past its time limit ends failed with a stable code
while the worker (here: the caller of worker.runner.run_job) carries on."""
from __future__ import annotations

import fakeredis
import pytest
import torch
from kombu.exceptions import OperationalError

from impress.contract import ErrorCode, JobKind, JobState, PurifyParams
from impress.records import InputImage
from impress.settings import Settings
from impress.store import JobStore
from tests.support import RecordingQueue, free_port, photo, png_bytes
from worker.engine.perceptual import PerceptualDistance

PNG = ("a.png", png_bytes(photo()), "image/png")
# Every route of the app with a request that reaches the store.
REQUESTS = [("GET", "/v1/jobs", {}), ("GET", "/v1/jobs/abc", {}), ("DELETE", "/v1/jobs/abc", {}), ("GET", "/v1/jobs/abc/results/0", {}),
            ("GET", "/v1/jobs/abc/files/report.html", {}),
            ("POST", "/v1/purify", {"files": [("images", PNG)], "data": {"iters": "3"}}),
            ("POST", "/v1/detect", {"files": [("images", PNG)]}),
            ("POST", "/v1/evaluate", {"files": [("clean", PNG)], "data": {"purifiers": "jpeg"}}),
            ("POST", "/v1/mimicry", {"files": [("clean", PNG)]}),
            ("POST", "/v1/protect", {"files": [("images", PNG)]})]


KEY = "robustness-test-key-0123456789"


@pytest.fixture(params=["open", "keys"])
def redis_down(request):
    """The app with its store pointed at a port where no Redis listens (redis-py's real errors), open
    or with API keys (whose rate limits live in Redis too)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    store = JobStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "impress-down", 60)
    settings = Settings(_env_file=None, api_keys=KEY if request.param == "keys" else "")
    with TestClient(create_app(settings, store=store, queue=RecordingQueue()),
                    headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


@pytest.mark.parametrize("method, path, kwargs", REQUESTS)
def test_redis_down_is_503_to_retry(redis_down, method, path, kwargs):
    r = redis_down.request(method, path, **kwargs)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "service_unavailable"
    assert int(r.headers["retry-after"]) > 0


def test_redis_down_readiness_says_so_and_health_metrics_answer(redis_down):
    ready = redis_down.get("/readyz")
    assert ready.status_code == 503 and ready.json()["redis"] is False
    assert redis_down.get("/healthz").status_code == 200
    metrics = redis_down.get("/metrics")
    assert metrics.status_code == 200 and "impress_redis_up 0.0" in metrics.text


def test_broker_refusing_a_message_is_503(fast_api, monkeypatch):
    client, _, queue, _ = fast_api

    def refuse(kind, job_id):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(queue, "send", refuse)
    r = client.post("/v1/purify", files=[("images", PNG)], data={"iters": "3"})
    assert (r.status_code, r.json()["error"]["code"]) == (503, "service_unavailable")


def test_any_other_error_is_a_500_in_the_envelope(fast_store):
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(Settings(_env_file=None), store=fast_store, queue=RecordingQueue())

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    r = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert (r.status_code, r.json()["error"]["code"]) == (500, "internal_error")


# ---------------------------------------------------------------- run_job: failures end in the record

class Stop(Exception):
    """Stands in for Celery's SoftTimeLimitExceeded."""


def queued_job(store: JobStore) -> str:
    data = png_bytes(photo(32, 32))
    params = PurifyParams(preset="photoguard", iters=4, lr=0.01, alpha=0.01, delta=0.05, noise=0.05)
    return store.create(JobKind.purify, params, [InputImage(name="a.png", blob=store.put_blob(data), width=32,
                                                            height=32, format="PNG")], vae="v", perceptual="dssim").id


@pytest.mark.parametrize("error, code", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ErrorCode.out_of_memory),
    (MemoryError(), ErrorCode.out_of_memory),
    (Stop(), ErrorCode.time_limit_exceeded),
    (RuntimeError("a bug"), ErrorCode.internal_error),
])
def test_engine_failure_ends_the_job_with_a_stable_code(monkeypatch, error, code):
    import worker.handlers.purify as purify_handler
    import worker.runner as runner

    store = JobStore(fakeredis.FakeRedis(), "impress-faults", 3600)

    def engine(*args, **kwargs):
        raise error

    monkeypatch.setattr(purify_handler, "run_purification", engine)
    job_id = queued_job(store)
    assert runner.run_job(store, Settings(_env_file=None), job_id, on_time_limit=Stop) == "failed"
    record = store.get(job_id)
    assert (record.state, record.error.code) == (JobState.failed, code)
    # run_job returned instead of raising: the worker process takes its next job.


class NanDistance(PerceptualDistance):
    """A perceptual distance gone wrong: NaN for every image."""

    name = "nan"

    def prepare(self, reference):
        return (reference,)

    def forward(self, x, prepared):
        return torch.full((x.shape[0],), float("nan"))


def test_non_finite_loss_fails_the_job_as_numerical_error(monkeypatch, small_vae_dir):
    """The engine loop notices the NaN at its next check; run_job records numerical_error."""
    import worker.engine.pipeline as pipeline
    import worker.runner as runner

    monkeypatch.setattr(pipeline, "load_perceptual", lambda name, device: NanDistance())
    store = JobStore(fakeredis.FakeRedis(), "impress-faults", 3600)
    settings = Settings(_env_file=None, vae=str(small_vae_dir), device="cpu", progress_every=2)
    job_id = queued_job(store)
    store.r.hset(store.keys.job(job_id), "vae", str(small_vae_dir))
    assert runner.run_job(store, settings, job_id, on_time_limit=Stop) == "failed"
    error = store.get(job_id).error
    assert error.code == ErrorCode.numerical_error and "not finite at step 1" in error.message
