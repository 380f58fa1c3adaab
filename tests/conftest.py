"""Shared fixtures (plain helpers are in support.py).

Fast layer: the app in-process with fakeredis and a recording queue (`fast_api`), no server needed.
End-to-end layer (`service`, marked e2e): real uvicorn, a real Celery worker process and a real
Redis on its own database index, under a key prefix the fixture deletes afterwards."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import MAX_BYTES, MAX_PIXELS, TEST_REDIS_URL, RecordingQueue, answers, delete_prefix, free_port, wait_for


def small_vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[16, 32], layers_per_block=1,
                latent_channels=4, norm_num_groups=8, sample_size=32)


@pytest.fixture(scope="session")
def small_vae_dir(tmp_path_factory) -> Path:
    """A randomly initialised small AutoencoderKL written with save_pretrained (loaded back offline)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "small-vae"
    AutoencoderKL(**small_vae_config()).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def random_lpips():
    from worker.engine.perceptual import load_perceptual

    return load_perceptual("lpips-vgg-random-backbone")


@pytest.fixture
def fake_redis():
    import fakeredis

    return fakeredis.FakeRedis()


@pytest.fixture
def fast_store(fake_redis):
    from impress.store import JobStore

    return JobStore(fake_redis, "impress-fast", 3600)


@pytest.fixture
def fast_api(fast_store):
    """(TestClient, store, queue, settings): the whole app in this process on fakeredis."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from impress.settings import Settings

    settings = Settings(_env_file=None, key_prefix="impress-fast", max_upload_bytes=MAX_BYTES, max_pixels=MAX_PIXELS,
                        max_images_per_job=4, detect_sync_timeout_s=0.2)
    queue = RecordingQueue()
    with TestClient(create_app(settings, store=fast_store, queue=queue)) as client:
        yield client, fast_store, queue, settings


def service_env(tag: str, vae_dir: Path, **extra: str) -> dict[str, str]:
    # One torch thread per worker: on a 2-core machine shared with the test process, more threads
    # oversubscribe the cores and slow tiny models by orders of magnitude.
    return {**os.environ, "OMP_NUM_THREADS": "1", "IMPRESS_REDIS_URL": TEST_REDIS_URL, "IMPRESS_KEY_PREFIX": tag,
            "IMPRESS_QUEUE": tag, "IMPRESS_VAE": str(vae_dir), "IMPRESS_PERCEPTUAL": "dssim", "IMPRESS_DEVICE": "cpu",
            "IMPRESS_PROGRESS_EVERY": "2", **extra}


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def service(small_vae_dir, tmp_path_factory):
    import httpx

    tag = f"impress-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(tag, small_vae_dir, IMPRESS_SCHEDULE="fast", IMPRESS_MAX_UPLOAD_BYTES=str(MAX_BYTES),
                      IMPRESS_MAX_PIXELS=str(MAX_PIXELS), IMPRESS_MAX_IMAGES_PER_JOB="4",
                      IMPRESS_MAX_ITERATIONS="100000", IMPRESS_DETECT_SYNC_MAX_IMAGES="2",
                      IMPRESS_DETECT_SYNC_TIMEOUT_S="30")
    logs = tmp_path_factory.mktemp("logs")
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--pool", "solo"], env=env,
                              stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT)
    api = subprocess.Popen([sys.executable, "-m", "cli", "api", "--port", str(port)], env=env,
                           stdout=open(logs / "api.log", "w"), stderr=subprocess.STDOUT)
    # Above IMPRESS_DETECT_SYNC_TIMEOUT_S: a sync detect may wait that long for its answer.
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_for(lambda: answers(client, "/readyz"), 60, "API ready with a worker answering", 0.5)
        yield client
    finally:
        client.close()
        stop(api, worker)
        delete_prefix(TEST_REDIS_URL, tag)
        print((logs / "worker.log").read_text()[-3000:])
