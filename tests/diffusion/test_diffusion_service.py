"""End to end: the diffusion jobs through a real API process, a real Celery worker and Redis, on the
tiny pipelines configured through the IMPRESS_*PIPELINE settings."""
from __future__ import annotations

import json

import pytest

from impress.views import JobView
from tests.conftest import running_service
from tests.support import photo, png_bytes, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def diffusion_service(tiny_pipelines, tmp_path_factory):
    with running_service("taef2", tmp_path_factory.mktemp("logs"),
                         IMPRESS_PIPELINE=str(tiny_pipelines["img2img"]),
                         IMPRESS_INPAINT_PIPELINE=str(tiny_pipelines["inpaint"])) as client:
        yield client


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
    metrics = JobView.model_validate(job).metrics
    assert metrics.editing.pipeline.kind == "inpaint" and len(metrics.protection.edit.psnr_db) == 1

    r = client.post("/v1/mimicry", files=[("clean", ("c.png", clean, "image/png")), ("clean", ("d.png", protected, "image/png"))],
                    data={"steps": "2", "size": "32", "eval_samples": "1", "generate": "1", "generate_steps": "2"})
    job = finished(client, r.headers["location"])
    assert job["state"] == "succeeded", job
    view = JobView.model_validate(job)
    assert view.model.kind == "img2img" and view.files[0].name == "clean-0.png"
    assert len(view.metrics.split.held_out) == 1 and len(view.metrics.split.train) == 1
