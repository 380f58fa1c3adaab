"""The diffusion scenarios as API jobs: submitted through the app (fakeredis, recording queue), then run
in this process by the worker's run_job on the tiny pipelines; results record the pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from impress.contract import EvaluateParams, JobKind, JobState
from impress.records import InputImage, InputRole
from impress.results import Split, StatedBudget
from impress.scenarios import MimicryParams
from impress.settings import Settings
from tests.support import photo, png_bytes
from worker.runner import run_job

PNG = ("a.png", png_bytes(photo(32, 32)), "image/png")


def worker_settings(tiny_pipelines, **extra) -> Settings:
    return Settings(_env_file=None, key_prefix="impress-fast", device="cpu", perceptual="dssim",
                    pipeline=str(tiny_pipelines["img2img"]), inpaint_pipeline=str(tiny_pipelines["inpaint"]),
                    upscale_pipeline=str(tiny_pipelines["upscale"]), **extra)


def put_inputs(store, roles: dict[InputRole, list[bytes]]) -> list[InputImage]:
    return [InputImage(role=role, name=f"{role.value}{i}.png", blob=store.put_blob(data), width=32, height=32,
                       format="PNG") for role, items in roles.items() for i, data in enumerate(items)]


def test_mimicry_is_queued_with_typed_params_and_runs_to_a_scored_result(fast_api, tiny_pipelines):
    client, store, queue, _ = fast_api
    r = client.post("/v1/mimicry", files=[("clean", PNG), ("clean", PNG), ("protected", PNG), ("protected", PNG)],
                    data={"steps": "3", "size": "32", "eval_samples": "1", "generate": "1", "generate_steps": "2",
                          "learning_rate": "0.01"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert queue.sent == [("mimicry", job_id)]
    assert isinstance(store.get(job_id).params, MimicryParams)
    assert run_job(store, worker_settings(tiny_pipelines), job_id, TimeoutError) == "succeeded"
    result = store.get(job_id).result
    assert set(result.metrics.sets) == {"clean", "protected"} and result.metrics.split == Split(train=[1], held_out=[0])
    assert result.metrics.sets["clean"].relative_gain in (1.0, None) and result.metrics.params.steps == 3
    assert result.model.kind == "img2img" and result.model.location == str(tiny_pipelines["img2img"].resolve())
    assert [f.name for f in result.files] == ["clean-0.png", "protected-0.png"]
    assert store.get(job_id).progress_step == 6


def test_mimicry_needs_a_held_out_work_and_one_image_per_work(fast_api):
    client, _, queue, _ = fast_api
    for files in ([("clean", PNG)], [("clean", PNG), ("clean", PNG), ("protected", PNG)]):
        r = client.post("/v1/mimicry", files=files, data={"steps": "1"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter", r.text
    assert queue.sent == []


def test_mimicry_without_a_configured_pipeline_fails_model_unavailable(fast_api):
    client, store, _, settings = fast_api
    job_id = client.post("/v1/mimicry", files=[("clean", PNG), ("clean", PNG)], data={"steps": "1"}).json()["id"]
    assert run_job(store, settings, job_id, TimeoutError) == "failed"
    error = store.get(job_id).error
    assert error.code.value == "model_unavailable" and "IMPRESS_PIPELINE" in error.message


@pytest.mark.parametrize("form, files, message", [
    ({"edit": "outpaint"}, [], "edit"),
    ({"edit": "img2img"}, [("mask", PNG)], "masks are for the inpainting edit"),
    ({"edit": '{"mode": "inpaint", "steps": 0}'}, [], "steps"),
])
def test_bad_edit_choices_are_refused(fast_api, form, files, message):
    client, _, queue, _ = fast_api
    r = client.post("/v1/evaluate", files=[("clean", PNG), ("protected", PNG)] + files, data=form)
    assert r.status_code == 422 and message in r.text, r.text
    assert queue.sent == []


def test_evaluation_with_an_inpainting_edit_scores_uploaded_sets_against_the_clean_edit(fast_api, tiny_pipelines):
    client, store, queue, _ = fast_api
    mask = np.zeros((32, 32, 3), np.uint8)
    mask[:, 16:] = 255
    r = client.post("/v1/evaluate", files=[("clean", PNG), ("protected", ("p.png", png_bytes(photo(32, 32, 3)),
                                                                          "image/png")),
                                           ("purified", PNG), ("mask", ("m.png", png_bytes(mask), "image/png"))],
                    data={"edit": json.dumps({"mode": "inpaint", "steps": 3})})
    assert r.status_code == 202, r.text
    record = store.get(r.json()["id"])
    assert record.params.edit.steps == 3 and [item.role for item in record.inputs].count(InputRole.mask) == 1
    # The record's VAE is the preset's hub id (not here): run the same job on the bundled VAE.
    job = store.create(JobKind.evaluate, record.params, record.inputs, vae="taef2", perceptual="dssim")
    assert run_job(store, worker_settings(tiny_pipelines), job.id, TimeoutError) == "succeeded"
    metrics = store.get(job.id).result.metrics
    editing = metrics.editing
    assert editing.pipeline.kind == "inpaint" and editing.settings.steps == 3
    purified = next(c for c in metrics.cells if c.purifier == "uploaded").edit
    assert purified.psnr_db[0] > 60          # purified = clean: the same edit
    assert metrics.protection.edit.psnr_db[0] < purified.psnr_db[0]
    assert editing.worst_case["uploaded"].psnr_db.purifiers == ["uploaded"]


def test_an_edit_needs_its_pipeline(fast_store, tiny_pipelines):
    inputs = put_inputs(fast_store, {InputRole.clean: [PNG[1]], InputRole.protected: [PNG[1]]})
    job = fast_store.create(JobKind.evaluate, EvaluateParams(edit="img2img"), inputs, vae="taef2",
                            perceptual="dssim")
    settings = worker_settings(tiny_pipelines).model_copy(update={"pipeline": None})
    assert run_job(fast_store, settings, job.id, TimeoutError) == JobState.failed.value
    assert fast_store.get(job.id).error.code.value == "model_unavailable"


def test_every_job_kind_has_a_spec_a_handler_and_the_one_task():
    from impress.contract import TASK_JOB
    from impress.jobspec import JOB_SPECS
    from worker.runner import handler_of
    from worker.tasks import celery_app

    assert set(JobKind) <= set(JOB_SPECS)
    assert all(callable(handler_of(spec.handler)) for spec in JOB_SPECS.values())
    assert TASK_JOB in celery_app.tasks


def test_evaluation_matrix_runs_diffusion_methods_and_the_edit_with_a_report(fast_store, tiny_pipelines):
    inputs = put_inputs(fast_store, {InputRole.clean: [PNG[1], png_bytes(photo(32, 32, 2))]})
    params = EvaluateParams(protections=["advdm:steps=1", "photoguard-8:steps=1"],
                            purifiers=["diffpure:steps=10", "jpeg-75"], size=32,
                            edit='{"mode": "img2img", "steps": 4}')
    job = fast_store.create(JobKind.evaluate, params, inputs, vae="taef2", perceptual="dssim")
    assert run_job(fast_store, worker_settings(tiny_pipelines), job.id, TimeoutError) == "succeeded"
    result = fast_store.get(job.id).result
    worst = result.metrics.editing.worst_case
    assert set(worst) == {"none", "advdm:steps=1", "photoguard-8:steps=1"}
    assert all(len(w.psnr_db.purifiers) == 2 for w in worst.values())
    assert result.metrics.pipelines["img2img"].kind == "img2img"
    report = fast_store.get_blob(next(f.blob for f in result.files if f.name == "results.md")).decode()
    assert "Worst case per image" in report and "advdm:steps=1" in report


def test_protect_job_runs_photoguards_diffusion_attack_toward_an_uploaded_target(fast_api, tiny_pipelines):
    client, store, _, _ = fast_api
    r = client.post("/v1/protect", files=[("images", PNG), ("target", ("t.png", png_bytes(photo(32, 32, 7)),
                                                                         "image/png"))],
                    data={"protection": "photoguard-diffusion:steps=2:grad_reps=1:inference_steps=2:eps=64"})
    assert r.status_code == 202, r.text
    record = store.get(r.json()["id"])
    job = store.create(JobKind.protect, record.params, record.inputs, vae="taef2", perceptual="dssim")
    assert run_job(store, worker_settings(tiny_pipelines), job.id, TimeoutError) == "succeeded"
    result = store.get(job.id).result
    assert result.metrics.pipelines["inpaint"].kind == "inpaint"
    # eps 64 per 512 x 512 is an L2 norm of 4 on the 32 x 32 upload
    assert result.metrics.stated == StatedBudget(l2_255_per_512x512=64 * 127.5, l2_255=4 * 127.5)
    assert result.images[0].budget.l2_255 <= 4 * 127.5 + 1e-3


def test_a_diffusion_protection_refuses_an_image_below_its_pipelines_sample_size(fast_api, tiny_pipelines):
    client, store, _, _ = fast_api
    small = ("s.png", png_bytes(photo(24, 24)), "image/png")
    r = client.post("/v1/protect", files=[("images", PNG), ("images", small)], data={"protection": "advdm:steps=1"})
    record = store.get(r.json()["id"])
    job = store.create(JobKind.protect, record.params, record.inputs, vae="taef2", perceptual="dssim")
    assert run_job(store, worker_settings(tiny_pipelines), job.id, TimeoutError) == "failed"
    error = store.get(job.id).error
    assert error.code.value == "invalid_parameter" and "image 2" in error.message and "sample size is 32" in error.message
