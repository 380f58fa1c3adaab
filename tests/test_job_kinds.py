"""A job kind of its own, declared in this module alone: a JobSpec and its handler. IMPRESS_JOB_KINDS
names this module to the API and the worker, and the kind runs end to end through the API (its own
route, form and limit check), Redis and a real worker, with no edit anywhere else."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from impress.jobspec import JOB_SPECS, InputSlot, JobSpec, StepCount
from impress.records import InputRole, JobResult
from impress.views import JobView
from tests.conftest import running_service
from tests.support import photo, png_bytes, poll

MODULE = "tests.test_job_kinds"   # as the service imports it (IMPRESS_JOB_KINDS)


class BrightnessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passes: int = Field(3, ge=1, description="times each image is measured (one step each)")


class BrightnessMetrics(BaseModel):
    brightness: dict[str, float]   # by image name


def brightness(ctx) -> JobResult:
    """Mean brightness of each image, measured `passes` times, one reported step per pass."""
    images = ctx.role(InputRole.image)
    for step in range(1, ctx.params.passes + 1):
        means = [float(np.asarray(item.image.rgb).mean()) for item in images]
        ctx.reporter.advance(step, ctx.params.passes)
    return JobResult(metrics=BrightnessMetrics(brightness=dict(zip((item.meta.name for item in images), means))),
                     seconds=0.0, device="cpu")


BRIGHTNESS = JobSpec(
    kind="brightness", params=BrightnessParams, handler=f"{MODULE}:brightness",
    inputs=(InputSlot(InputRole.image, "images to measure", required=True, most=2, field="images"),),
    summary="Queue a brightness measurement", steps=lambda params: [StepCount("passes", "passes", params.passes)])

JOB_KINDS = [BRIGHTNESS]


@pytest.fixture
def registry_restored():
    """The registry as it was: a kind registered by one test is not another test's."""
    saved = dict(JOB_SPECS)
    yield
    JOB_SPECS.clear()
    JOB_SPECS.update(saved)


@pytest.mark.parametrize("path, files, data", [
    ("/v1/purify", ["images"], {"iters": "11"}),
    ("/v1/evaluate", ["clean"], {"protections": ["mist-16"], "attack_steps": "11"}),
    ("/v1/evaluate", ["clean"], {"purifiers": ["impress:iters=11"]}),
    ("/v1/protect", ["images"], {"protection": "glaze-like:steps=11"}),
    ("/v1/mimicry", ["clean", "clean"], {"steps": "11"}),
])
def test_every_built_in_kind_is_held_to_the_one_iteration_limit(make_fast_api, path, files, data):
    client, _, queue, _ = make_fast_api(max_iterations=10)
    png = ("a.png", png_bytes(photo(16, 16)), "image/png")
    r = client.post(path, files=[(name, png) for name in files], data=data)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_parameter" and "exceeds this service's limit of 10" in error["message"]
    assert queue.sent == []


def test_a_registered_kind_gets_its_route_form_counts_and_limit(make_fast_api, registry_restored):
    client, store, queue, _ = make_fast_api(job_kinds=MODULE, max_iterations=10)
    png = ("a.png", png_bytes(photo(16, 16)), "image/png")
    r = client.post("/v1/brightness", files=[("images", png)], data={"passes": "4"})
    assert r.status_code == 202, r.text
    record = store.get(r.json()["id"])
    assert record.kind == "brightness" and record.params.passes == 4 and queue.sent == [("brightness", record.id)]
    for data, files, message in (({"passes": "11"}, [png], "passes=11 exceeds this service's limit of 10"),
                                 ({"colour": "red"}, [png], "unknown fields: colour"),
                                 ({}, [png] * 3, "3 images sent; send at most 2")):
        r = client.post("/v1/brightness", files=[("images", f) for f in files], data=data)
        assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
    assert "/v1/brightness" in client.get("/openapi.json").json()["paths"]


@pytest.mark.e2e
def test_a_kind_declared_in_a_test_module_runs_end_to_end(small_vae_dir, tmp_path):
    with running_service(small_vae_dir, tmp_path, IMPRESS_JOB_KINDS=MODULE) as client:
        files = [("images", (f"{i}.png", png_bytes(np.full((16, 16, 3), 40 * i, np.uint8)), "image/png"))
                 for i in (1, 2)]
        r = client.post("/v1/brightness", files=files, data={"passes": "5"})
        assert r.status_code == 202, r.text
        job = poll(client, r.headers["location"], lambda j: j["state"] in ("succeeded", "failed", "canceled"))
        assert job["state"] == "succeeded", job
        assert job["kind"] == "brightness" and job["metrics"] == {"brightness": {"1.png": 40.0, "2.png": 80.0}}
        view = JobView.model_validate(job)   # the kind's own fields, as a client reads them
        assert BrightnessMetrics.model_validate(view.metrics.model_dump()).brightness["2.png"] == 80.0
        assert job["progress"] == {"step": 5, "total": 5, "fraction": 1.0}
        # The built-in kinds run beside it on the same worker (inline, or polled on a busy machine).
        r = client.post("/v1/detect", files=[("images", files[0][1])])
        assert r.status_code in (200, 202), r.text
        job = r.json() if r.status_code == 200 else poll(client, r.headers["location"],
                                                         lambda j: j["state"] in ("succeeded", "failed"))
        assert job["state"] == "succeeded", job
