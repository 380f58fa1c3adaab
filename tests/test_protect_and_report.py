"""What must hold on any model: attacks stay within budget, the report is reproducible."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.metrics import roc_auc_score

from impress.images import decode_image
from impress.methods import choose
from impress.results import ProtectionMetrics
from tests.support import photo, png_bytes
from worker.engine.metrics import encode, linf_255, psnr, roc_auc, roc_curve, ssim
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.premise import FIGURES, figures_against_clean
from worker.engine.protect import encoder_attack, grey_target
from worker.engine.protect_images import run_protection
from worker.engine.tensors import quantize_8bit, to_tensor


def clean_batch(n=3, size=32):
    return torch.cat([to_tensor(photo(size, size, seed=s)) for s in range(n)])


def test_encoder_attack_stays_in_budget_and_moves_the_latent(small_vae_dir):
    vae, _ = load_vae(str(small_vae_dir))
    x = clean_batch()
    target = grey_target(x)
    for eps in (8, 16):
        adv = encoder_attack(vae, x, target, eps=eps / 255, steps=20)
        assert float(linf_255(adv, x).max()) <= eps + 1e-3
        assert adv.min() >= -1 and adv.max() <= 1
        z, zt = encode(vae, x), encode(vae, target)
        assert ((encode(vae, adv) - zt).norm() < (z - zt).norm())


def test_metrics_agree_with_known_values():
    a = torch.zeros(1, 3, 16, 16)
    b = a + 2 * 0.1  # 0.1 on the [0, 1] scale: MSE 0.01 -> 20 dB
    assert abs(float(psnr(a, b)) - 20.0) < 1e-4
    assert abs(float(ssim(a, a)) - 1.0) < 1e-6
    assert float(linf_255(a, b)) == 25.5
    assert roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0 and roc_auc([0.1, 0.3], [0.2, 0.4]) == 0.75


def test_ssim_and_its_distance_match_scikit_image():
    a = np.stack([photo(40, 32, seed=s) for s in range(3)])
    noise = np.random.default_rng(0).normal(0, 12, a.shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    want = [structural_similarity(x / 255, y / 255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1.0) for x, y in zip(a, b)]
    ta, tb = (torch.cat([to_tensor(im) for im in batch]) for batch in (a, b))
    assert ssim(ta, tb).tolist() == pytest.approx(want, abs=1e-5)
    dssim = load_perceptual("dssim")
    assert dssim.bind(tb)(ta).tolist() == pytest.approx([1 - w for w in want], abs=1e-5)
    assert dssim(ta, dssim.prepare(tb)).tolist() == pytest.approx([1 - w for w in want], abs=1e-5)


def test_roc_auc_matches_scikit_learn_and_its_curve():
    rng = np.random.default_rng(1)
    negatives = rng.normal(0, 1, 40).round(1).tolist()  # rounded: ties between the classes
    positives = rng.normal(0.7, 1, 30).round(1).tolist()
    want = roc_auc_score([0] * 40 + [1] * 30, negatives + positives)
    assert roc_auc(negatives, positives) == pytest.approx(want, abs=1e-12)
    fpr, tpr = roc_curve(negatives, positives)
    assert np.trapezoid(tpr, fpr) == pytest.approx(want, abs=1e-12)
    # Consistency errors of a good model are small numbers whose differences float32 would round away.
    assert roc_auc([0.01], [0.01 + 1e-11]) == roc_auc_score([0, 1], [0.01, 0.01 + 1e-11]) == 1.0


def test_premise_figures_of_the_clean_pictures_against_themselves(small_vae_dir):
    vae, _ = load_vae(str(small_vae_dir))
    x = quantize_8bit(clean_batch())
    figures = figures_against_clean(vae, x, x)
    assert set(figures) == set(FIGURES) and all(len(v) == 3 for v in figures.values())
    assert figures["latent_distance_to_clean"] == [0.0] * 3 and min(figures["decoded_psnr_db"]) > 100
    assert figures["ssim_to_clean"] == pytest.approx([1.0] * 3) and min(figures["consistency_error"]) > 0


def test_run_protection_returns_each_image_as_saved_with_its_measured_budget(small_vae_dir):
    """Mixed sizes, an alpha channel and a caller's target: every output keeps its input's size and
    alpha, and its budget, measured on the 8-bit image, is within what the protection states."""
    decode = lambda data: decode_image(data, max_bytes=10**7, max_pixels=10**6)  # noqa: E731
    rgba = np.dstack([photo(40, 24, seed=1), np.full((24, 40), 99, np.uint8)])
    images = [decode(png_bytes(photo(32, 32, seed=0))), decode(png_bytes(rgba, mode="RGBA")),
              decode(png_bytes(photo(32, 32, seed=2)))]
    target = decode(png_bytes(photo(64, 48, seed=9)))
    for name in ("glaze-like", "photoguard-8"):
        run = run_protection(images, choose("protection", name, steps=3), vae=str(small_vae_dir), perceptual="dssim",
                             device="cpu", target=target, batch_size=2)
        assert [im.rgb.shape for im in run.images] == [(32, 32, 3), (24, 40, 3), (32, 32, 3)]
        assert run.images[1].alpha is not None and (run.images[1].alpha == 99).all()
        assert run.perceptual.name == "dssim" and run.model.revision.startswith("sha256:")
        for im, original in zip(run.images, images):
            saved, clean = to_tensor(im.rgb), to_tensor(original.rgb)
            assert im.budget.linf_255 == pytest.approx(float(linf_255(saved, clean)), abs=1e-3)
            assert 0 < im.budget.linf_255 <= run.stated.linf_255 + 1e-3
            assert im.budget.perceptual <= (run.stated.perceptual or 1.0)


def test_protect_cli_writes_pngs_and_their_measured_budgets(small_vae_dir, tmp_path, capsys):
    from PIL import Image

    from cli.main import main

    paths = []
    for s, size in enumerate(((32, 32), (40, 24))):
        paths.append(tmp_path / f"in{s}.png")
        Image.fromarray(photo(*size, seed=s)).save(paths[-1])
    style = tmp_path / "style.png"
    Image.fromarray(photo(50, 50, seed=7)).save(style)
    out = tmp_path / "out"
    assert main(["protect", *map(str, paths), "-o", str(out), "--protection", "glaze-like:steps=2:p=0.03",
                 "--target", str(style), "--model", str(small_vae_dir), "--perceptual", "dssim",
                 "--device", "cpu"]) == 0
    summary = json.loads((out / "protect.json").read_text())
    metrics = ProtectionMetrics.model_validate(summary)   # protect.json holds a protect job's metrics
    assert metrics.protection.params["steps"] == 2 and metrics.stated.perceptual == 0.03
    assert metrics.target == str(style)
    for path, record in zip(paths, summary["images"]):
        saved = np.asarray(Image.open(record["output"]))
        assert saved.shape == np.asarray(Image.open(path)).shape
        assert record["budget"]["perceptual"] <= 0.03 and record["budget"]["linf_255"] <= 16 + 1e-3
        assert record["budget"]["linf_255"] == pytest.approx(
            float(linf_255(to_tensor(saved), to_tensor(np.asarray(Image.open(path))))), abs=1e-3)
    assert "PSNR" in capsys.readouterr().out
    assert main(["protect", str(paths[0]), "-o", str(out), "--protection", "photoguard-8:p=1",
                 "--model", str(small_vae_dir)]) == 2
    assert "no parameter 'p'" in capsys.readouterr().err
