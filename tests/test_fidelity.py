"""The methods do what their authors' code does (docs/algorithm.md, docs/diffusion.md): PhotoGuard's PGD
schedule, Mist's posterior sampling, noise in [0, 1] units, IMPRESS++ as noise then IMPRESS, purified
images scored as 8-bit, IMPRESS in the matrix on its preset's model."""
from __future__ import annotations

import pytest
import torch

from impress.methods import choose, parse_choice
from impress.results import ModelIdentity
from tests.support import photo
from worker.engine import protect
from worker.engine.matrix import run_matrix
from worker.engine.models import load_vae
from worker.engine.perceptual import load_perceptual
from worker.engine.purifiers import apply_purifier
from worker.engine.tensors import quantize_8bit, to_tensor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae(small_vae_dir):
    return load_vae(str(small_vae_dir))[0]


def clean_batch(n=2, size=32):
    return torch.cat([to_tensor(photo(size, size, seed=s)) for s in range(n)])


def test_photoguard_steps_start_at_a_third_of_eps_and_decay_linearly_to_a_hundredth(vae, monkeypatch):
    """MadryLab/photoguard's pgd: actual_step = step - (step - step/100) / iters * i, with step 0.02 for
    eps 0.06 (a third). With the gradient's sign forced to +1 every pixel inside the box moves down by
    exactly the sum of the steps."""
    real_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: (torch.ones_like(real_grad(*a, **k)[0]),))
    x = torch.zeros(1, 3, 32, 32)          # mid-grey: the pixel range never clips
    eps, steps = 32 / 255, 5
    out = protect.encoder_attack(vae, x, torch.zeros_like(x), eps=eps, steps=steps, seed=0)
    monkeypatch.undo()
    first = 2 * eps / 3                    # in the engine's [-1, 1] units
    total = sum(first - (first - first / 100) * i / steps for i in range(steps))
    start = (torch.rand(x.shape, generator=torch.Generator(device="cpu").manual_seed(0)) * 2 - 1) * 2 * eps
    inside = start - total > -2 * eps + 1e-4
    assert inside.float().mean() > 0.3
    torch.testing.assert_close((start - out)[inside], torch.full_like(out[inside], total), atol=1e-5, rtol=0)


def test_mist_encodes_with_a_seeded_posterior_sample(vae, monkeypatch):
    """Mist's get_first_stage_encoding draws a posterior sample in every mode: the textural attack draws
    one per step (seeded: the same seed, the same result; another seed, another one)."""
    x = clean_batch(1)
    draws = []
    real = vae.sample
    monkeypatch.setattr(vae, "sample", lambda im, gen=None: draws.append(1) or real(im, gen))
    a = protect.apply_protection(choose("protection", "mist-16", steps=3), vae, x)
    assert len(draws) == 2 * 3  # the image and the target, every step
    b = protect.apply_protection(choose("protection", "mist-16", steps=3), vae, x)
    c = protect.apply_protection(choose("protection", "mist-16", steps=3, seed=1), vae, x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    draws.clear()
    protect.apply_protection(choose("protection", "photoguard-8", steps=2), vae, x)
    assert draws == []  # PhotoGuard's pgd encodes with the posterior's mean
    monkeypatch.undo()


def test_noise_sigma_is_in_0_1_pixel_units():
    x = torch.zeros(1, 3, 64, 64)   # mid-grey: no clipping
    noisy = apply_purifier(choose("purifier", "noise-0.05"), x)
    assert ((noisy - x) / 2).std() == pytest.approx(0.05, rel=0.05)


def test_impress_plus_plus_is_gaussian_noise_then_impress(vae, monkeypatch):
    from worker.engine import purifiers

    seen = {}
    monkeypatch.setattr(purifiers, "impress",
                        lambda x, params, vae, distance, reporter=None: seen.update(x=x, params=params) or x)
    x = clean_batch(1)
    chosen = choose("purifier", "impress++", iters=2)
    out = apply_purifier(chosen, x, vae, load_perceptual("dssim"))
    torch.testing.assert_close(seen["x"], purifiers.gaussian_noise(x, 0.05, 0))
    assert seen["params"].preset == "glaze" and torch.equal(out, seen["x"])


def test_purified_images_are_scored_as_8bit_and_impress_runs_on_its_presets_model(vae, small_vae_dir):
    clean = clean_batch(2)
    asked = []

    def impress_vae(preset):
        asked.append(preset)
        return vae

    result = run_matrix(vae, ModelIdentity(name="small"), load_perceptual("dssim"), clean, ["a", "b"], [],
                        [parse_choice("noise-0.05", "purifier"), parse_choice("impress:iters=1:preset=glaze", "purifier")],
                        batch=2, impress_vae=impress_vae)
    assert asked == ["glaze"]
    cell = result.cells[0]
    noisy = quantize_8bit(apply_purifier(parse_choice("noise-0.05", "purifier"), clean))
    from worker.engine.metrics import psnr
    assert cell.per_image.psnr_db == pytest.approx(psnr(noisy, clean).tolist(), abs=1e-3)
