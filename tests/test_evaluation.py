"""Evaluation tools: purifiers keep shape and range, protections keep their budgets and move the
latent toward their targets, detection holds its calibrated FPR, the benchmark runs and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from impress.contract import DetectParams, PurifyOverrides, ThresholdPair
from impress.results import MatrixResult
from tests.support import photo
from worker.engine.detect import ScoreCalibration, calibrate, consistency_scores, verdicts
from worker.engine.metrics import encode, linf_255
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from impress.methods import PURIFIERS, choose
from worker.engine.protect import (apply_protection, budget, default_glaze_target, default_mist_pattern, grey_target,
                                   stated_budget)
from worker.engine.purifiers import PURIFIER_FUNCTIONS, apply_purifier
from worker.engine.tensors import quantize_8bit, to_tensor


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def clean_batch(n=2, size=32):
    return torch.cat([to_tensor(photo(size, size, seed=s)) for s in range(n)])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae(small_vae_dir):
    return load_vae(str(small_vae_dir))[0]


# The diffusion purifiers need a pipeline; tests/diffusion runs them on tiny ones.
@pytest.mark.parametrize("name", sorted(n for n, m in PURIFIERS.items() if m.model.pipeline_kind is None))
def test_every_purifier_keeps_size_and_range(name, vae):
    x = clean_batch(2, 32)[..., :24]  # not square, so size mix-ups show
    overrides = {"iters": 2} if "iters" in PURIFIERS[name].model.model_fields else {}
    if name == "resize":
        overrides = {"size": 16}
    y = apply_purifier(choose("purifier", name, **overrides), x, vae=vae, distance=load_perceptual("dssim"))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1 and y.max() <= 1
    assert not torch.equal(y, x)


def test_jpeg_changes_pixels_and_low_quality_changes_more():
    x = clean_batch(2, 32)
    err = {q: float(((apply_purifier(choose("purifier", f"jpeg-{q}"), x) - x) ** 2).mean()) for q in (15, 75)}
    assert 0 < err[75] < err[15]


@pytest.mark.parametrize("name,target", [("photoguard-8", grey_target), ("photoguard-16", grey_target),
                                         ("mist-16", lambda x: default_mist_pattern(32, 32).expand_as(x)),
                                         ("glaze-like", lambda x: default_glaze_target(32, 32).expand_as(x))])
def test_protection_keeps_its_budget_and_moves_the_latent_to_its_target(name, target, vae):
    """Measured on the 8-bit output, every protection spends at most what it states."""
    x, distance = clean_batch(2, 32), load_perceptual("dssim")
    spec = choose("protection", name, steps=10)
    adv = apply_protection(spec, vae, x, distance)
    assert adv.shape == x.shape and adv.min() >= -1 and adv.max() <= 1
    assert torch.equal(adv, quantize_8bit(adv))
    spent = budget(adv, x, distance)
    stated = stated_budget(spec)
    assert stated.model_dump(exclude_none=True).keys() == ({"linf_255", "perceptual"} if name == "glaze-like"
                                                           else {"linf_255"})
    assert max(spent.linf_255) <= stated.linf_255 + 1e-3  # fp32 rounding of grey levels mapped to [-1, 1]
    assert stated.perceptual is None or max(spent.perceptual) <= stated.perceptual
    assert linf_255(adv, x).max() > 0
    z, zt = encode(vae, x), encode(vae, target(x))
    assert ((encode(vae, adv) - zt).flatten(1).norm(dim=1) < (z - zt).flatten(1).norm(dim=1)).all()


def test_glaze_like_keeps_its_budget_where_the_latent_term_dominates(vae):
    """A hinge weight the latent term swamps (alpha 0.01) and a wide box: the adaptive weight and the
    final line search still hold the perceptual budget on the 8-bit image, and a caller's target is
    the one pulled toward."""
    x, distance = clean_batch(2, 32), load_perceptual("dssim")
    own_target = torch.flip(x, dims=(-1,))
    spec = choose("protection", "glaze-like", steps=20, alpha=0.01, eps=64 / 255, lr=0.05)
    adv = apply_protection(spec, vae, x, distance, target=own_target)
    assert max(budget(adv, x, distance).perceptual) <= spec.params.p
    assert max(linf_255(adv, x)) <= 64 + 1e-3
    z, zt = encode(vae, x), encode(vae, own_target)
    assert ((encode(vae, adv) - zt).flatten(1).norm(dim=1) < (z - zt).flatten(1).norm(dim=1)).all()


def test_calibrated_threshold_holds_its_fpr_on_held_out_clean_scores():
    gen = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randn(n, generator=gen).exp().tolist()  # noqa: E731  lognormal "clean" scores
    cal = calibrate(draw(4000), 0.05)
    assert cal.n == 4000 and 0.05 - 1 / 4000 <= cal.fpr <= 0.05
    held_out = verdicts(draw(4000), cal.threshold)
    fpr = held_out.count("protected") / len(held_out)
    # Binomial sampling error of both sets: sd ~ sqrt(2 * 0.05 * 0.95 / 4000) ~ 0.005; allow 4 sd.
    assert abs(fpr - 0.05) < 0.02
    assert calibrate([1.0, 2.0, 3.0, 4.0], 0.25).threshold == 3.0
    two_sided = calibrate([1.0, 2.0, 3.0, 4.0], 0.25, target_low_fpr=0.25)
    assert (two_sided.threshold, two_sided.low_threshold, two_sided.low_fpr) == (3.0, 2.0, 0.25)
    assert verdicts([0.5, 2.5, 5.0], 3.0, 2.0) == ["purified", "clean", "protected"]
    assert verdicts([0.5], None) == [None]
    with pytest.raises(ValueError, match="add up"):
        calibrate([1.0, 2.0], 0.6, target_low_fpr=0.5)
    for alone_or_crossed in (dict(low_threshold=0.1), dict(threshold=0.1, low_threshold=0.2)):
        with pytest.raises(ValueError, match="low_threshold"):
            DetectParams(**alone_or_crossed)
    service = ThresholdPair(3.0, 2.0, "settings")
    assert DetectParams().thresholds(service) == service  # the service's pair, never mixed
    assert DetectParams(threshold=4.0).thresholds(service) == ThresholdPair(4.0, None, "request")


def test_calibration_reports_the_out_of_sample_rate_and_warns_when_too_few():
    """Uniform clean scores: the rate a threshold t has on new clean images is exactly 1 - t. Over many
    calibration sets of n = 20 at 5% it averages (1 + 1) / 21 (not the 5% flagged in sample) and lies
    in the reported 95% interval about 95% of the time."""
    gen = torch.Generator().manual_seed(0)
    trials = [calibrate(torch.rand(20, generator=gen).tolist(), 0.05) for _ in range(4000)]
    rates = torch.tensor([1 - cal.threshold for cal in trials])
    expected = trials[0].expected_fpr
    assert expected.expected == pytest.approx(2 / 21) and trials[0].fpr == 0.05
    assert float(rates.mean()) == pytest.approx(2 / 21, abs=0.005)  # sd of the mean ~0.001
    low, high = expected.interval
    assert 0.93 < float(((rates >= low) & (rates <= high)).double().mean()) < 0.97
    assert len(trials[0].warnings()) == 1 and "at least 37 images" in trials[0].warnings()[0]
    enough = calibrate(torch.rand(100, generator=gen).tolist(), 0.05, target_low_fpr=0.05)
    assert enough.warnings() == [] and enough.expected_low_fpr.expected == pytest.approx(6 / 101)


def test_two_sided_detection_flags_impress_output_on_taef2():
    """IMPRESS leaves images over-consistent: on taef2 a lower threshold calibrated on
    clean photo tiles flags purified tiles 'purified', each scoring below its clean original (a flat
    clean tile may fall below too: that is the calibrated false positive rate)."""
    from impress.contract import OFFLINE_MODEL
    from worker.engine.purify import purify

    vae, _ = load_vae(OFFLINE_MODEL)
    tiles = [to_tensor(np.asarray(Image.open(path).convert("RGB")))[..., y:y + 32, x:x + 32]
             for path in sorted(EXAMPLES.glob("*.png")) for y in range(0, 128, 32) for x in range(0, 128, 32)]
    held_out, calibration_tiles = tiles[::8], [t for i, t in enumerate(tiles) if i % 8]
    cal = calibrate(consistency_scores(vae, calibration_tiles), 0.1, target_low_fpr=0.1)
    purified = purify(vae, load_perceptual("dssim"), torch.cat(held_out), PurifyOverrides(schedule="fast", iters=60).resolve("dssim"))
    scores = consistency_scores(vae, list(purified.images.split(1)))
    assert verdicts(scores, cal.threshold, cal.low_threshold) == ["purified"] * len(held_out)
    assert all(p < c for p, c in zip(scores, consistency_scores(vae, held_out)))


def test_offline_distance_default_alpha_keeps_purified_images_in_budget():
    """On taef2, 1 - SSIM's own default alpha holds the hinge: purified 64 px crops of the examples end
    within 1.25 delta of their input; with the presets' LPIPS-scale alpha 0.01 they pass delta (60 fast
    steps: 1-SSIM 0.043 and 0.043 against 0.058 and 0.050, delta 0.05)."""
    from impress.contract import OFFLINE_MODEL
    from worker.engine.purify import purify

    vae, _ = load_vae(OFFLINE_MODEL)
    x = torch.cat([to_tensor(np.array(Image.open(path).convert("RGB")))[..., 32:96, 32:96]
                   for path in sorted(EXAMPLES.glob("*.png"))])
    distance = load_perceptual("dssim")
    final = {}
    for alpha in (None, 0.01):
        params = PurifyOverrides(schedule="fast", iters=60, alpha=alpha).resolve("dssim")
        out = purify(vae, distance, x, params).images
        final[alpha] = distance.bind(x)(quantize_8bit(out))
    assert (final[None] <= 1.25 * params.delta).all(), final
    assert (final[0.01] > params.delta).any() and (final[0.01] > final[None]).all(), final


def test_consistency_scores_match_per_image_and_mixed_sizes(vae):
    images = [to_tensor(photo(32, 32, seed=0)), to_tensor(photo(40, 24, seed=1)), to_tensor(photo(32, 32, seed=2))]
    batched = consistency_scores(vae, images, batch=2)
    alone = [consistency_scores(vae, [im])[0] for im in images]
    assert batched == pytest.approx(alone, rel=1e-4)


def test_detect_and_calibrate_cli(small_vae_dir, tmp_path, capsys):
    paths = []
    for s in range(3):
        paths.append(tmp_path / f"{s}.png")
        Image.fromarray(photo(32, 32, seed=s)).save(paths[-1])
    cal = tmp_path / "calibration.json"
    assert main(["calibrate", *map(str, paths), "--fpr", "0.34", "--low-fpr", "0.34", "-o", str(cal),
                 "--model", str(small_vae_dir), "--device", "cpu"]) == 0
    record = ScoreCalibration.model_validate_json(cal.read_text())
    assert record.score == "latent-shift" and record.model_revision  # the default score
    c = record.calibration
    assert c.n == 3 and c.fpr == pytest.approx(1 / 3)
    assert c.low_fpr == pytest.approx(1 / 3) and c.low_threshold <= c.threshold
    assert c.expected_fpr.expected == pytest.approx(2 / 4)  # (floor(0.34 * 3) + 1) / (3 + 1)
    assert "on new clean images expect 50.0%" in capsys.readouterr().out
    assert main(["calibrate", *map(str, paths), "--fpr", "0.1", "-o", str(tmp_path / "few.json"),
                 "--model", str(small_vae_dir), "--device", "cpu"]) == 0
    assert "3 clean images are too few for a 10.0% target" in capsys.readouterr().err
    assert main(["detect", *map(str, paths), "--calibration", str(cal), "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["verdict"] for line in lines) == ["clean", "protected", "purified"]
    assert {(line["score_name"], line["thresholds_from"]) for line in lines} == {("latent-shift", "calibration")}
    assert main(["detect", str(paths[0]), "--calibration", str(cal), "--score", "raw"]) == 2
    assert "calibrates the latent-shift score, not raw" in capsys.readouterr().err
    assert main(["detect", str(paths[0]), "--score", "raw", "--threshold", "0", "--model", str(small_vae_dir)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["score_name"], line["thresholds_from"], line["verdict"]) == ("raw", "request", "protected")
    assert main(["detect", str(paths[0]), "--low-threshold", "0.1", "--model", str(small_vae_dir)]) == 2
    assert "--low-threshold goes with --threshold" in capsys.readouterr().err


def test_bench_writes_reports_and_resumes(small_vae_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for s in range(2):
        Image.fromarray(photo(40, 36, seed=s)).save(images / f"{s}.png")
    out = tmp_path / "bench"
    argv = ["bench", "--images", str(images), "--protections", "photoguard-8,glaze-like,mist-16",
            "--purifiers", "jpeg-15,resize:size=16,impress", "-o", str(out), "--model", str(small_vae_dir),
            "--perceptual", "dssim", "--size", "32", "--impress-iters", "2", "--attack-steps", "3", "--device", "cpu"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["computed"] == 12 and results["skipped"] == 0
    matrix = MatrixResult.model_validate(results)   # results.json holds the matrix, as an evaluation's metrics
    assert matrix.model.revision and matrix.perceptual == "dssim"
    assert set(matrix.protections) == {"none", "photoguard-8", "glaze-like", "mist-16"}
    assert 0 <= matrix.protections["photoguard-8"].detection_auc <= 1
    cell = next(c for c in matrix.cells if c.protection == "photoguard-8" and c.purifier == "impress")
    assert None not in (cell.mean.perceptual, cell.mean.consistency_purified, cell.mean.latent_distance_after)
    assert "| photoguard-8 | impress |" in (out / "results.md").read_text()
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3 + 1 + 4 * 4

    cells = sorted((out / "cells").glob("*.json")) + sorted((out / "protected").glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in cells]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["computed"] == 0 and results["skipped"] == 12
    assert [p.stat().st_mtime_ns for p in cells] == stamps

    assert main([*argv[:-6], "--impress-iters", "3", "--attack-steps", "3", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["computed"] == 4 and results["skipped"] == 8  # only the changed purifier's cells rerun


def test_every_named_method_has_an_engine_function():
    from impress.methods import PROTECTIONS
    from worker.engine.protect import PROTECTION_FUNCTIONS
    from worker.engine.purifiers import PURIFIER_FUNCTIONS

    assert {m.model for m in PROTECTIONS.values()} == set(PROTECTION_FUNCTIONS)
    assert {m.model for m in PURIFIERS.values()} == set(PURIFIER_FUNCTIONS)
