"""Shared fixtures (plain helpers are in support.py).

Fast layer: the app in-process with fakeredis and a recording queue (`fast_api`), no server needed.
End-to-end layer (`service`, marked e2e): real uvicorn, a real Celery worker process and a real
Redis on its own database index, under a key prefix the fixture deletes afterwards."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import (MAX_BYTES, MAX_PIXELS, TEST_REDIS_URL, RecordingQueue, answers, broker_env, delete_prefix,
                           free_port, small_vae_config, stop, wait_for)


@pytest.fixture(autouse=True)
def fresh_settings():
    """Each test reads the environment it set: the process-wide settings cache starts empty."""
    from impress.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def small_vae_dir(tmp_path_factory) -> Path:
    """A randomly initialised small AutoencoderKL written with save_pretrained (loaded back offline)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "small-vae"
    AutoencoderKL(**small_vae_config()).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core CPU run fastest on one torch thread: several threads spend more
    on synchronising each small op than they gain, a lot more on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def random_lpips():
    from worker.engine.perceptual import load_perceptual

    return load_perceptual("lpips-vgg-random-backbone")


@pytest.fixture
def fake_server():
    import fakeredis

    return fakeredis.FakeServer()


@pytest.fixture
def fake_redis(fake_server):
    import fakeredis

    return fakeredis.FakeRedis(server=fake_server)


@pytest.fixture
def fast_store(fake_redis, fake_server):
    """The store on fakeredis, with an async client on the same fake server (event streams)."""
    import fakeredis

    from impress.store import JobStore

    return JobStore(fake_redis, "impress-fast", 3600, aio=fakeredis.FakeAsyncRedis(server=fake_server))


@pytest.fixture
def make_fast_api(fast_store):
    """make(**settings) -> (TestClient, store, queue, settings): the whole app in this process on
    fakeredis, with a recording queue."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from impress.settings import Settings

    clients = []

    def make(**overrides):
        settings = Settings(_env_file=None, key_prefix="impress-fast", max_upload_bytes=MAX_BYTES,
                            max_pixels=MAX_PIXELS, max_images_per_job=4, detect_sync_timeout_s=0.2,
                            **overrides)
        queue = RecordingQueue()
        client = TestClient(create_app(settings, store=fast_store, queue=queue)).__enter__()
        clients.append(client)
        return client, fast_store, queue, settings

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def fast_api(make_fast_api):
    """(TestClient, store, queue, settings) of an open service (no API keys)."""
    return make_fast_api()


def service_env(tag: str, vae_dir: Path, **extra: str) -> dict[str, str]:
    # One torch thread per worker: on a 2-core machine shared with the test process, more threads
    # oversubscribe the cores and slow tiny models by orders of magnitude.
    return {**os.environ, "OMP_NUM_THREADS": "1", "IMPRESS_REDIS_URL": TEST_REDIS_URL, "IMPRESS_KEY_PREFIX": tag,
            "IMPRESS_QUEUE": tag, "IMPRESS_VAE": str(vae_dir), "IMPRESS_PERCEPTUAL": "dssim", "IMPRESS_DEVICE": "cpu",
            "IMPRESS_PROGRESS_EVERY": "2", "IMPRESS_RATE_LIMIT": "100000/minute", **broker_env(), **extra}


@contextlib.contextmanager
def running_service(vae_dir: Path | str, logs: Path, webhook_worker: bool = False, **extra_env: str):
    """An httpx client of a real API with a real solo worker (and, asked for, a webhook worker on its
    own queue) on the test Redis, under a key prefix deleted afterwards."""
    import httpx

    tag = f"impress-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(tag, vae_dir, IMPRESS_SCHEDULE="fast", IMPRESS_MAX_UPLOAD_BYTES=str(MAX_BYTES),
                      IMPRESS_MAX_PIXELS=str(MAX_PIXELS), IMPRESS_MAX_IMAGES_PER_JOB="4",
                      IMPRESS_MAX_ITERATIONS="100000", IMPRESS_DETECT_SYNC_MAX_IMAGES="2",
                      IMPRESS_DETECT_SYNC_TIMEOUT_S="30", **extra_env)
    cli = [sys.executable, "-m", "cli"]
    procs = [subprocess.Popen(cli + ["worker", "--pool", "solo"], env=env,
                              stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT),
             subprocess.Popen(cli + ["api", "--port", str(port)], env=env,
                              stdout=open(logs / "api.log", "w"), stderr=subprocess.STDOUT)]
    if webhook_worker:
        procs.append(subprocess.Popen(cli + ["worker", "--pool", "solo", "--queues", "webhooks"], env=env,
                                      stdout=open(logs / "webhooks.log", "w"), stderr=subprocess.STDOUT))
    # Above IMPRESS_DETECT_SYNC_TIMEOUT_S: a sync detect may wait that long for its answer.
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_for(lambda: answers(client, "/readyz"), 90, "API ready with a worker alive", 0.5)
        yield client
    finally:
        client.close()
        stop(*procs)
        delete_prefix(TEST_REDIS_URL, tag)
        for log in sorted(logs.glob("*.log")):
            print(f"--- {log.name}\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def service(small_vae_dir, tmp_path_factory):
    with running_service(small_vae_dir, tmp_path_factory.mktemp("logs")) as client:
        yield client
