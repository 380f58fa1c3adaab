"""A job's metrics are typed on every side: what a handler returns comes back, through the store (JSON in
Redis) and the job view (the API's answer, a webhook's body, the client's JobView), as the same model."""
from __future__ import annotations

import pytest
from pydantic import BaseModel

from impress.contract import EvaluateParams, JobKind, ProtectParams
from impress.records import InputImage, JobResult
from impress.results import (BudgetMeans, BudgetPerImage, Cell, CellMeans, CellPerImage, CleanSummary, EditComparison,
                             EditingSummary, KindMetrics, MethodLabel, MimicryMetrics, MimicryScore, ModelIdentity,
                             PipelineIdentity, ProtectionMetrics, ProtectionSummary, Split, StatedBudget,
                             UploadedResult, WorstCase, WorstCases)
from impress.scenarios import EditParams, MimicryParams
from impress.views import JobView, job_view

IMAGE = InputImage(name="a.png", blob="0" * 64, width=4, height=4, format="PNG")
MODEL = ModelIdentity(name="taef2", source="bundled", revision="sha256:ab", dtype="float32", device="cpu")
PIPELINE = PipelineIdentity(name="sd", kind="inpaint", source="folder", location="/m/sd", revision="sha256:cd")


def figures(model: type[BaseModel], value) -> BaseModel:
    return model(**{name: value for name in model.model_fields})


def worst(metric: str) -> WorstCase:
    return WorstCase(metric=metric, higher_is_better=metric != "perceptual", values=[1.0], purifiers=["jpeg-75"],
                     mean=1.0)


EDIT = EditComparison(psnr_db=[30.0], ssim=[0.9], perceptual=[0.1], perceptual_name="dssim")
UPLOADED = UploadedResult(
    model=MODEL, perceptual="dssim", clean=CleanSummary(consistency_error=[0.5]),
    protection=ProtectionSummary(name="uploaded", params={}, budget=figures(BudgetMeans, 2.0),
                                 budget_per_image=figures(BudgetPerImage, [2.0]), consistency_error=[0.7],
                                 detection_auc=1.0, edit=EDIT),
    cells=[Cell(purifier="jpeg-75", params={"quality": 75}, seconds=0.1, mean=figures(CellMeans, None),
                per_image=figures(CellPerImage, [None]), detection_auc_clean_vs_purified=0.5, edit=EDIT)],
    pipelines={"inpaint": PIPELINE},
    editing=EditingSummary(settings=EditParams(steps=3), pipeline=PIPELINE,
                           worst_case={"uploaded": WorstCases(psnr_db=worst("psnr_db"), ssim=worst("ssim"),
                                                              perceptual=worst("perceptual"))}))
PROTECTION = ProtectionMetrics(protection=MethodLabel(name="glaze-like", params={"p": 0.03, "steps": 2}),
                               stated=StatedBudget(linf_255=16.0, perceptual=0.03), target="style.png")
MIMICRY = MimicryMetrics(pipeline=PIPELINE.model_copy(update={"kind": "img2img"}), params=MimicryParams(steps=3),
                         split=Split(train=[1], held_out=[0]),
                         sets={"clean": MimicryScore(training_set="clean", final_losses=[0.2], clean_loss_base=0.3,
                                                     clean_loss_tuned=0.25, gain=0.05, relative_gain=1.0)})
KINDS = [(JobKind.evaluate, EvaluateParams(), UPLOADED), (JobKind.protect, ProtectParams(protection="glaze-like"),
                                                          PROTECTION),
         (JobKind.mimicry, MimicryParams(), MIMICRY)]


@pytest.mark.parametrize("kind, params, metrics", KINDS, ids=[k.value for k, _, _ in KINDS])
def test_each_kinds_metrics_come_back_as_their_model(fast_store, kind, params, metrics):
    result = JobResult(metrics=metrics, model=MODEL, seconds=1.0, device="cpu")
    assert JobResult.model_validate_json(result.model_dump_json()) == result
    job = fast_store.create(kind, params, [IMAGE], vae="taef2", perceptual="dssim")
    fast_store.start(job.id, 2)
    assert fast_store.succeed(job.id, result)
    record = fast_store.get(job.id)
    assert type(record.result.metrics) is type(metrics) and record.result.metrics == metrics
    view = JobView.model_validate_json(job_view(record, f"http://x/v1/jobs/{job.id}").model_dump_json())
    assert view.metrics == metrics and view.model == MODEL


def test_the_json_keeps_its_keys_and_says_which_figures_it_holds():
    dumped = JobResult(metrics=PROTECTION, seconds=1.0, device="cpu").model_dump(mode="json")["metrics"]
    assert dumped["kind"] == "protect" and dumped["target"] == "style.png"
    assert dumped["stated"]["linf_255"] == 16.0 and dumped["protection"]["params"]["steps"] == 2
    assert UPLOADED.model_dump(mode="json")["editing"]["worst_case"]["uploaded"]["psnr_db"]["purifiers"] == ["jpeg-75"]


class BrightnessMetrics(BaseModel):
    brightness: dict[str, float]


def test_a_registered_kinds_own_metrics_keep_their_fields():
    """A kind a deployment registers returns its own model (or a dict); records written before metrics
    carried their kind read the same way, as KindMetrics."""
    for given in (BrightnessMetrics(brightness={"a.png": 40.0}), {"brightness": {"a.png": 40.0}}):
        result = JobResult(metrics=given, seconds=0.0, device="cpu")
        back = JobResult.model_validate_json(result.model_dump_json()).metrics
        assert isinstance(back, KindMetrics) and back.model_dump() == {"brightness": {"a.png": 40.0}}
        assert BrightnessMetrics.model_validate(back.model_dump()).brightness["a.png"] == 40.0
