"""The matrix in memory (a typed result, no files), its reports, and the resume folder around it."""
from __future__ import annotations

import json

import pytest
import torch

from impress.contract import EvaluateParams
from impress.records import JobResult
from impress.results import MatrixResult
from impress.views import JobView, Progress
from tests.support import photo
from worker.engine import matrix
from worker.engine.matrix import run_matrix
from worker.engine.matrix_cache import ResumeFolder
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.report import html_report, markdown_report
from worker.engine.tensors import to_tensor

CHOSEN = EvaluateParams(protections=["photoguard-8", "mist-16"], purifiers=["jpeg-15", "blur:sigma=0.5"],
                        attack_steps=2)


@pytest.fixture(scope="module")
def setup(small_vae_dir):
    vae, identity = load_vae(str(small_vae_dir))
    clean = torch.cat([to_tensor(photo(32, 32, seed=s)) for s in range(2)])
    return vae, identity, load_perceptual("dssim"), clean


def run(setup, names=("a.png", "b.png"), **kwargs) -> MatrixResult:
    vae, identity, distance, clean = setup
    return run_matrix(vae, identity, distance, clean, list(names), CHOSEN.protection_choices(),
                      CHOSEN.purifier_choices(), batch=2, **kwargs)


def test_matrix_scores_each_image_set_once(setup, monkeypatch):
    calls = []
    real = matrix.consistency_scores
    monkeypatch.setattr(matrix, "consistency_scores", lambda vae, images, batch: calls.append(len(images))
                        or real(vae, images, batch))
    result = run(setup)
    # clean once, each protection's images once, each cell's purified images once
    assert len(calls) == 1 + 2 + 3 * 2
    assert [(c.protection, c.purifier) for c in result.cells] == [
        (p, q) for p in ("none", "photoguard-8", "mist-16") for q in ("jpeg-15", "blur:sigma=0.5")]
    for cell in result.cells:
        assert cell.per_image.consistency_protected == result.protections[cell.protection].consistency_error
        assert cell.per_image.consistency_clean == result.clean.consistency_error
    assert result.protections["photoguard-8"].params["steps"] == 2 and result.protections["none"].detection_auc is None
    assert result.purifiers["blur:sigma=0.5"].params == {"sigma": 0.5}


def test_reports_render_from_the_result_and_escape_names(setup):
    result = run(setup, names=("<b>a.png", "b.png"))
    page = html_report(result)
    assert "&lt;b&gt;a.png" in page and "<b>a.png" not in page
    assert page.count("data:image/png;base64,") == 3 + 1 + 3 * 3  # plots, clean, (protected + 2 cells) per row
    md = markdown_report(result)
    assert "| photoguard-8 | blur:sigma=0.5 |" in md and "| none | 0 | 0 |" in md
    dumped = result.model_dump(mode="json")
    assert "thumbnail" not in json.dumps(dumped) and dumped["cells"][0]["purifier"] == "jpeg-15"


def test_a_matrix_result_crosses_the_store_and_the_api_typed(setup):
    """The evaluation's metrics as the worker records them, the store keeps them (JSON) and the API and
    the client read them: the same MatrixResult, thumbnails (the reports' alone) left behind."""
    result = run(setup)
    job = JobResult(metrics=result, model=result.model, seconds=1.0, device="cpu")
    back = JobResult.model_validate_json(job.model_dump_json()).metrics
    assert isinstance(back, MatrixResult) and back.model_dump() == result.model_dump()
    assert back.cells[0].mean.perceptual == result.cells[0].mean.perceptual is not None
    view = JobView.model_validate_json(JobView(id="j", kind="evaluate", state="succeeded", progress=Progress(
        step=1, total=1, fraction=1.0), created_at=0, attempts=1, params={}, vae="v", perceptual="dssim", inputs=[],
        metrics=result).model_dump_json())
    assert view.metrics == back


def test_resume_folder_hands_back_what_it_computed(setup, tmp_path):
    _, identity, _, _ = setup
    folders = [ResumeFolder(tmp_path, images=["a.png", "b.png"], size=32, model=identity, perceptual="dssim")
               for _ in range(2)]
    first, second = (run(setup, cache=folder) for folder in folders)
    assert (folders[0].computed, folders[0].skipped) == (6, 0) and (folders[1].computed, folders[1].skipped) == (0, 6)
    assert second.model_dump() == first.model_dump()
    assert [c.thumbnail for c in second.cells] == [c.thumbnail for c in first.cells]
    folders[1].write_reports(second)
    assert json.loads((tmp_path / "results.json").read_text())["skipped"] == 6
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.md", "report.html", "cells", "protected"}
