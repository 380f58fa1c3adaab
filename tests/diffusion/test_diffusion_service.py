"""End to end: the diffusion jobs through a real API process, a real Celery worker and Redis, on the
tiny pipelines configured through the IMPRESS_*PIPELINE settings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.support import TEST_REDIS_URL, answers, delete_prefix, free_port, photo, png_bytes, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def diffusion_service(tiny_pipelines, tmp_path_factory):
    import httpx

    tag = f"impress-diffusion-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMPRESS_REDIS_URL": TEST_REDIS_URL, "IMPRESS_KEY_PREFIX": tag,
           "IMPRESS_QUEUE": tag, "IMPRESS_VAE": "impress-tiny-vae", "IMPRESS_PERCEPTUAL": "dssim",
           "IMPRESS_DEVICE": "cpu", "IMPRESS_PIPELINE": str(tiny_pipelines["img2img"]),
           "IMPRESS_INPAINT_PIPELINE": str(tiny_pipelines["inpaint"]), "IMPRESS_PROGRESS_EVERY": "2"}
    logs = tmp_path_factory.mktemp("logs")
    procs = [subprocess.Popen([sys.executable, "-m", "cli", *command], env=env, stdout=open(logs / f"{name}.log", "w"),
                              stderr=subprocess.STDOUT)
             for name, command in (("worker", ["worker", "--pool", "solo"]), ("api", ["api", "--port", str(port)]))]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_for(lambda: answers(client, "/readyz"), 90, "API ready with a worker answering", 0.5)
        yield client
    finally:
        client.close()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        delete_prefix(TEST_REDIS_URL, tag)
        print((logs / "worker.log").read_text()[-3000:])


def finished(client, url: str) -> dict:
    wait_for(lambda: client.get(url).json()["state"] in ("succeeded", "failed", "canceled"), 180, f"{url} finished", 0.5)
    return client.get(url).json()


def test_editing_evaluation_and_mimicry_run_as_jobs(diffusion_service):
    client = diffusion_service
    clean, protected = png_bytes(photo(32, 32, 0)), png_bytes(photo(32, 32, 5))
    r = client.post("/v1/evaluate", files=[("clean", ("c.png", clean, "image/png")),
                                           ("protected", ("p.png", protected, "image/png"))],
                    data={"edit": json.dumps({"mode": "inpaint", "steps": 2})})
    assert r.status_code == 202, r.text
    job = finished(client, r.headers["location"])
    assert job["state"] == "succeeded", job
    assert job["metrics"]["editing"]["pipeline"]["kind"] == "inpaint"
    assert len(job["metrics"]["protection"]["edit"]["psnr_db"]) == 1

    r = client.post("/v1/mimicry", files=[("clean", ("c.png", clean, "image/png"))],
                    data={"steps": "2", "size": "32", "eval_samples": "1", "generate": "1", "generate_steps": "2"})
    job = finished(client, r.headers["location"])
    assert job["state"] == "succeeded", job
    assert job["model"]["kind"] == "img2img" and job["files"][0]["name"] == "clean-0.png"
