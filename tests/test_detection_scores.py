"""Detection scores normalised by the picture's content, where thresholds come from, and the evaluation
pictures (worker/engine/pictures.py)."""
from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
import torch

from impress.contract import DEFAULT_DETECT_SCORE, DETECT_SCORES, DetectParams, JobKind, ThresholdPair
from impress.records import Verdict
from impress.settings import Settings
from impress.store import JobStore
from impress.records import InputImage
from tests.support import photo, png_bytes
from worker.engine import detect as engine_detect
from worker.engine import pictures as pics
from worker.engine.detect import (LATENT_SHIFT_SIGMA, REFERENCE_COPIES, ScoreCalibration, ShippedCalibrations,
                                  calibrate, consistency_scores, detection_scores, service_thresholds)
from worker.engine.models import load_vae
from worker.engine.purifiers import blur
from worker.engine.tensors import to_tensor

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAINING_PACKAGES = ("mate-backgrounds", "lomiri-wallpapers", "plasma-workspace-wallpapers", "gnome-backgrounds",
                     "debian-edu-artwork")


@pytest.fixture(scope="module")
def vae(small_vae_dir):
    return load_vae(str(small_vae_dir))


def test_every_offered_score_is_computed_and_a_ratio_divides_by_its_reference_copy(vae):
    model, _ = vae
    images = [to_tensor(photo(32, 32, seed=s)) for s in range(2)]
    raw = consistency_scores(model, images)
    assert detection_scores(model, images, "raw") == raw
    assert set(DETECT_SCORES) == {"raw", "latent-shift", *REFERENCE_COPIES} and DEFAULT_DETECT_SCORE == "latent-shift"
    for name, copy in REFERENCE_COPIES.items():
        reference = consistency_scores(model, [copy(x) for x in images])
        assert detection_scores(model, images, name) == pytest.approx([r / f for r, f in zip(raw, reference)])
    for x, score in zip(images, detection_scores(model, images, "latent-shift")):
        z, z_blurred = model.encode(x), model.encode(blur(x, LATENT_SHIFT_SIGMA))
        assert score == pytest.approx(float(((z - z_blurred) ** 2).mean() / (z ** 2).mean()), rel=1e-3)  # batched vs alone


def test_the_latent_shift_ranks_protected_pictures_above_clean_ones_on_taef2():
    """The premise of the default score on the shipped model: PhotoGuard's encoder attack makes the
    latent far more sensitive to a light blur than any clean picture's (bench/results/detection-scores.md
    measures it on 24 pictures; here four synthetic ones, a few steps)."""
    from impress.methods import choose
    from worker.engine.perceptual import load_perceptual
    from worker.engine.protect import apply_protection

    taef2, _ = load_vae("taef2")
    clean = torch.cat([to_tensor(photo(64, 64, seed=s)) for s in range(4)])
    protected = apply_protection(choose("protection", "photoguard-16", steps=8), taef2, clean, load_perceptual("dssim"))
    clean_scores = detection_scores(taef2, list(clean.split(1)), "latent-shift")
    protected_scores = detection_scores(taef2, list(protected.split(1)), "latent-shift")
    assert min(protected_scores) > max(clean_scores)


def test_thresholds_come_from_the_request_then_the_settings_then_the_shipped_calibration(monkeypatch):
    shipped = ShippedCalibrations(calibrations=[
        ScoreCalibration(score=DEFAULT_DETECT_SCORE, model="m", model_revision="r1", calibration=calibrate([1, 2, 3], 0.34)),
        ScoreCalibration(score="raw", model="m", model_revision="r1", calibration=calibrate([0.1, 0.2], 0.5))])
    monkeypatch.setattr(engine_detect, "shipped_calibrations", lambda: shipped)
    configured = Settings(_env_file=None, detect_threshold=9.0)
    unset = Settings(_env_file=None)
    params = DetectParams()
    assert params.thresholds(*service_thresholds(configured, "m", "r1", DEFAULT_DETECT_SCORE)) == ThresholdPair(9.0, None, "settings")
    assert params.thresholds(*service_thresholds(unset, "m", "r1", DEFAULT_DETECT_SCORE)) == ThresholdPair(2, None, "shipped")
    # The settings' thresholds are for the default score; another score gets its own shipped one.
    assert DetectParams(score="raw").thresholds(*service_thresholds(configured, "m", "r1", "raw")).source == "shipped"
    # A threshold holds only for its weights: another revision gets none.
    assert params.thresholds(*service_thresholds(unset, "m", "r2", DEFAULT_DETECT_SCORE)) == ThresholdPair()
    assert DetectParams(threshold=0.5).thresholds(ThresholdPair(9.0, None, "settings")).source == "request"


def test_the_shipped_thresholds_name_their_model_score_and_command():
    shipped = engine_detect.shipped_calibrations()
    for cal in shipped.calibrations:
        assert cal.score in DETECT_SCORES and cal.model and cal.model_revision and cal.command
        assert cal.calibration.n >= 2 / cal.calibration.target_fpr  # enough images for its target
    if shipped.calibrations:
        assert {c.score for c in shipped.calibrations if c.model == "taef2"} == set(DETECT_SCORES)


def test_a_detect_job_records_the_score_used_and_where_its_thresholds_came_from(small_vae_dir):
    from worker.runner import run_job

    store = JobStore(fakeredis.FakeRedis(), "impress-jobs", 3600)
    inputs = [InputImage(name="0.png", blob=store.put_blob(png_bytes(photo(32, 32, 0))), width=32, height=32,
                         format="PNG")]
    job_id = store.create(JobKind.detect, DetectParams(score="raw"), inputs, vae=str(small_vae_dir),
                          perceptual="dssim").id
    settings = Settings(_env_file=None, device="cpu", detect_threshold=0.0)
    assert run_job(store, settings, job_id, on_time_limit=TimeoutError) == "succeeded"
    (d,) = store.get(job_id).result.detections
    # The configured threshold is the default score's: a raw-score request is judged by none.
    assert d.score_name == "raw" and d.verdict is None and d.thresholds_from is None
    job_id = store.create(JobKind.detect, DetectParams(), inputs, vae=str(small_vae_dir), perceptual="dssim").id
    assert run_job(store, settings, job_id, on_time_limit=TimeoutError) == "succeeded"
    (d,) = store.get(job_id).result.detections
    assert d.score_name == DEFAULT_DETECT_SCORE and d.verdict == Verdict.protected and d.thresholds_from == "settings"


def test_the_api_takes_the_score_and_refuses_an_unknown_one(fast_api):
    client, _, queue, _ = fast_api
    png = ("a.png", png_bytes(photo(16, 16, 0)), "image/png")
    assert client.post("/v1/detect", files=[("images", png)], data={"score": "raw"}).status_code in (200, 202)
    assert client.post("/v1/detect", files=[("images", png)], data={"score": "bogus"}).status_code == 422


def test_the_evaluation_pictures_are_photographs_and_illustrations_from_untrained_sources():
    evaluation, calibration = pics.EVALUATION, pics.CALIBRATION
    assert len(evaluation) >= 24 and {p.kind for p in evaluation} == {"photo", "illustration"}
    assert sum(p.kind == "photo" for p in evaluation) == len(evaluation) // 2
    assert not {(p.source, p.path) for p in evaluation} & {(p.source, p.path) for p in calibration}
    assert len({p.name for p in evaluation + calibration}) == len(evaluation + calibration)  # names key the caches
    for p in evaluation + calibration:
        assert p.source in pics.WHEELS + pics.DEBIAN_PACKAGES and p.licence
        assert not any(p.source.startswith(t) for t in TRAINING_PACKAGES)
    wheels = tuple(p for p in evaluation if not p.from_debian)
    assert pics.available(wheels, Path("/nonexistent")) == wheels  # the wheels' photos need no fetch
    batch = pics.picture_batch(wheels[:2], 64, Path("/nonexistent"))
    assert batch.shape == (2, 3, 64, 64) and batch.min() >= -1 and batch.max() <= 1


def test_a_missing_debian_picture_says_how_to_fetch_it(tmp_path, monkeypatch):
    debian = next(p for p in pics.EVALUATION if p.from_debian)
    with pytest.raises(pics.PicturesUnavailable, match="impress pictures fetch"):
        pics.picture_path(debian, tmp_path)
    monkeypatch.setattr(pics.shutil, "which", lambda name: None)
    with pytest.raises(pics.PicturesUnavailable, match="apt-get is not available"):
        pics.fetch_packages(tmp_path, ("openclipart-png",))


def test_the_debian_pictures_load_when_cached():
    cache = Path(Settings(_env_file=None).picture_cache).expanduser()
    debian = tuple(p for p in pics.EVALUATION if p.from_debian)
    if pics.available(debian, cache) != debian:
        pytest.skip(f"the Debian pictures are not in {cache}: impress pictures fetch")
    batch = pics.picture_batch(debian, 32, cache)
    assert batch.shape == (len(debian), 3, 32, 32) and torch.isfinite(batch).all()
