"""Plain helpers the tests share (fixtures live in conftest.py): synthetic photos, encoded images,
ports, and waiting for a condition."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
import time

import numpy as np
from PIL import Image

# The end-to-end tests talk to a real Redis on this database index, each under its own key prefix.
TEST_REDIS_URL = os.environ.get("IMPRESS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# ... and to another Celery broker when this names one (scripts/test_rabbitmq.sh: RabbitMQ, on a
# vhost of its own); job records stay in TEST_REDIS_URL.
TEST_BROKER_URL = os.environ.get("IMPRESS_TEST_BROKER_URL")


def broker_env() -> dict[str, str]:
    return {"IMPRESS_BROKER_URL": TEST_BROKER_URL} if TEST_BROKER_URL else {}


def photo(width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo-like image (gradients plus a few shapes), uint8 H x W x 3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([np.sin(3 * xx + rng.uniform(0, 3)), np.cos(4 * yy + rng.uniform(0, 3)), xx * yy], -1)
    img = (img - img.min()) / (np.ptp(img) + 1e-9)
    return (img * 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray, mode: str = "RGB", fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, format=fmt, **save)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(*procs: subprocess.Popen, timeout_s: float = 20) -> None:
    """Terminate the processes, and kill any that has not ended after `timeout_s`."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def poll(client, url: str, until, timeout: float = 120):
    """The job at `url` once `until(job)` holds."""
    return wait_for(lambda: (lambda j: j if until(j) else None)(client.get(url).json()), timeout, f"job {url}")


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (a test's own, Celery's included) and nothing else."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


# Upload limits of the end-to-end service (small, so the limit tests stay fast).
MAX_BYTES, MAX_PIXELS = 300_000, 200_000


def answers(client, path: str) -> bool:
    import httpx

    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


class StepRecorder:
    """A progress reporter (impress.progress.Reporter) that remembers every (step, total) it is told
    and cancels (raises Canceled) once `stop_after` says so."""

    def __init__(self, stop_after=lambda step, total: False):
        self.seen: list[tuple[int, int]] = []
        self.stop_after = stop_after

    def advance(self, step: int, total: int, loss=None) -> None:
        from impress.progress import Canceled

        self.seen.append((step, total))
        if self.stop_after(step, total):
            raise Canceled


class RecordingQueue:
    """The fast layer's job queue: remembers what was sent; `broker_up` is what readiness sees."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []
        self.webhooks: list = []    # WebhookDelivery messages
        self.broker_up = True

    def send(self, kind: str, job_id: str) -> None:
        self.sent.append((kind, job_id))

    def send_webhook(self, delivery) -> None:
        self.webhooks.append(delivery)

    def broker_reachable(self, timeout_s: float = 1.0) -> bool:
        return self.broker_up


def small_vae_config(downsamplings: int = 1) -> dict:
    """A small AutoencoderKL's config: 2 ** downsamplings smaller latents, 4 channels."""
    blocks = downsamplings + 1
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * blocks,
                up_block_types=["UpDecoderBlock2D"] * blocks, block_out_channels=[16, 32, 32, 32][:blocks],
                layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32)


def run_job_later(store, job_id: str, delay_s: float = 0.3) -> threading.Thread:
    """What a worker does: start, two progress writes, success."""
    from impress.contract import StopReason
    from impress.records import JobResult, ResultImage

    def work():
        time.sleep(delay_s)
        store.start(job_id, 2)
        for step in (5, 10):
            store.progress(job_id, step, 10)
        image = ResultImage(name="a.png", blob=store.put_blob(b"png"), width=48, height=40, iterations=10,
                            stop_reason=StopReason.completed, trace=[])
        store.succeed(job_id, JobResult(images=[image], model={"name": "m"}, seconds=0.1, device="cpu"))
    thread = threading.Thread(target=work)
    thread.start()
    return thread
