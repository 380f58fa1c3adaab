"""The IMPRESS engine: faithful to the published loop, batch-correct, any size, deterministic."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from impress.contract import PurifyOverrides, PurifyParams
from impress.images import decode_image, encode_png
from impress.progress import Canceled
from tests.support import StepRecorder, photo, png_bytes
from worker.engine.models import ModelUnavailable, load_vae
from worker.engine import pipeline
from worker.engine import purify as purify_module
from worker.engine.pipeline import EngineOptions, fitting_batch_size, run_purification
from worker.engine.purify import impress_losses, purify
from worker.engine.tensors import to_tensor


def params(**kw) -> PurifyParams:
    base = dict(preset="photoguard", iters=6, lr=0.01, alpha=0.5, delta=0.0, noise=0.05, seed=3, early_stop=False)
    return PurifyParams(**{**base, **kw})


@pytest.mark.parametrize("alpha, delta, noise", [(0.0, 0.1, 0.0), (0.5, 0.0, 0.1)],
                         ids=["plain", "noisy-start-and-active-hinge"])
def test_matches_published_loop_step_for_step(small_vae_dir, random_lpips, alpha, delta, noise):
    from bench.reference_impress import reference_purify

    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32, seed=1))
    for iters in (1, 5):
        ref, _ = reference_purify(vae, lambda a, b: random_lpips.net(a, b), x, iters=iters, lr=0.01,
                                  alpha=alpha, delta=delta, noise=noise, seed=7)
        ours = purify(vae, random_lpips, x, params(iters=iters, alpha=alpha, delta=delta, noise=noise, seed=7))
        assert ours.iterations == iters
        # Same math in another order (per-image sums, cached LPIPS features): fp32 rounding, which
        # Adam's 1/(sqrt(v) + 1e-5) can magnify where a gradient is near zero.
        torch.testing.assert_close(ours.images, ref, atol=1e-4, rtol=0)


def test_noisy_start_is_not_clamped(small_vae_dir, random_lpips, monkeypatch):
    """The photo spans the full range, so sigma 0.1 starts pixels outside [-1, 1]: the test above
    matches the authors' unclamped start, and a clamped start (as the engine once had) is measurably
    different, so that test can tell the two apart."""
    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32, seed=1))
    run = params(iters=5, alpha=0.5, delta=0.0, noise=0.1, seed=7)
    unclamped = purify(vae, random_lpips, x, run).images
    noise = purify_module.starting_noise(x.shape, run.seed)
    assert ((x + run.noise * noise).abs() > 1).any()
    clamped_noise = ((x + run.noise * noise).clamp(-1, 1) - x) / run.noise
    monkeypatch.setattr(purify_module, "starting_noise", lambda shape, seed: clamped_noise)
    clamped = purify(vae, random_lpips, x, run).images
    assert (unclamped - clamped).abs().max() * 127.5 > 1  # over a grey level apart


def test_schedule_betas_reach_the_optimiser(small_vae_dir, random_lpips, monkeypatch):
    """The published loop with Adam's betas set to the fast schedule's is what the engine runs."""
    import functools

    from bench.reference_impress import reference_purify

    fast = PurifyOverrides(schedule="fast").resolve()
    monkeypatch.setattr(torch.optim, "Adam", functools.partial(torch.optim.Adam, betas=(fast.beta1, fast.beta2)))
    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32, seed=2))
    ref, _ = reference_purify(vae, lambda a, b: random_lpips.net(a, b), x, iters=4, lr=0.01,
                              alpha=0.5, delta=0.0, noise=0.05, seed=7)
    ours = purify(vae, random_lpips, x, params(iters=4, seed=7, beta1=fast.beta1, beta2=fast.beta2))
    published = purify(vae, random_lpips, x, params(iters=4, seed=7))
    # beta2 0.9 forgets fast, so Adam's 1/(sqrt(v) + 1e-5) magnifies fp32 rounding more than with the
    # published betas (1e-4 seen with 2 threads); the betas themselves move pixels by over 1e-2.
    torch.testing.assert_close(ours.images, ref, atol=1e-3, rtol=0)
    assert (published.images - ours.images).abs().max() > 1e-2


def test_each_image_gradient_is_its_own(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir))
    batch = torch.cat([to_tensor(photo(32, 32, seed=s)) for s in range(3)])
    start = (batch + 0.05 * torch.randn_like(batch)).requires_grad_(True)
    impress_losses(vae, random_lpips.bind(batch), start, 0.5, 0.0, (32, 32))[0].sum().backward()
    for i in range(3):
        alone = start[i:i + 1].detach().clone().requires_grad_(True)
        impress_losses(vae, random_lpips.bind(batch[i:i + 1]), alone, 0.5, 0.0, (32, 32))[0].sum().backward()
        scale = float(alone.grad.abs().max())  # fp32 sums in another order: compare to the gradient's scale
        torch.testing.assert_close(start.grad[i:i + 1], alone.grad, rtol=0, atol=1e-4 * scale)


def test_image_in_a_batch_gets_the_same_result_as_alone(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir))
    batch = torch.cat([to_tensor(photo(32, 32, seed=s)) for s in range(3)])
    together = purify(vae, random_lpips, batch, params())
    for i in range(3):
        alone = purify(vae, random_lpips, batch[i:i + 1], params())
        # Gradients agree to fp32 rounding (test above); Adam divides by sqrt(v) + 1e-5, which
        # magnifies that rounding up to lr/eps = 1000x where a pixel's gradient is near zero.
        torch.testing.assert_close(together.images[i:i + 1], alone.images, atol=2e-3, rtol=0)
        assert together.traces[i][-1]["loss"] == pytest.approx(alone.traces[0][-1]["loss"], rel=1e-4)


def test_lowers_its_objective_and_stays_in_range(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir))
    out = purify(vae, random_lpips, to_tensor(photo(32, 32)), params(iters=30, lr=0.01), log_every=10)
    trace = out.traces[0]
    assert trace[-1]["loss"] < trace[0]["loss"]
    assert out.images.min() >= -1 and out.images.max() <= 1


def test_deterministic_under_a_seed_on_cpu(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32))
    a = purify(vae, random_lpips, x, params(seed=11)).images
    b = purify(vae, random_lpips, x, params(seed=11)).images
    c = purify(vae, random_lpips, x, params(seed=12)).images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_plateau_stops_early_and_cancel_stops_within_a_report(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32))
    flat = params(iters=400, lr=1e-6, early_stop=True, plateau_window=20, plateau_rel_tol=0.01)
    out = purify(vae, random_lpips, x, flat, report_every=5)
    assert out.stop_reason == "plateau" and out.iterations < 400
    reporter = StepRecorder(stop_after=lambda step, total: step >= 10)
    with pytest.raises(Canceled):
        purify(vae, random_lpips, x, params(iters=400), report_every=5, reporter=reporter)
    assert reporter.seen == [(5, 400), (10, 400)]


def test_any_size_alpha_and_exif_through_the_pipeline(small_vae_dir, random_lpips):
    rgba = np.dstack([photo(37, 21), np.full((21, 37), 200, np.uint8)])
    buf = io.BytesIO()
    im = Image.fromarray(photo(30, 18))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the decoded image is 18 wide, 30 high
    im.save(buf, format="JPEG", exif=exif)
    images = [decode_image(png_bytes(rgba, mode="RGBA"), max_bytes=10**7, max_pixels=10**6),
              decode_image(buf.getvalue(), max_bytes=10**7, max_pixels=10**6)]
    assert (images[1].width, images[1].height) == (18, 30)
    run = run_purification(images, params(iters=3), vae=str(small_vae_dir), perceptual="dssim",
                           options=EngineOptions(device="cpu"))
    assert run.images[0].rgb.shape == (21, 37, 3) and run.images[1].rgb.shape == (30, 18, 3)
    assert run.images[0].rgb.dtype == np.uint8
    out0 = Image.open(io.BytesIO(encode_png(run.images[0].rgb, images[0].alpha)))  # as the job stores it
    assert out0.size == (37, 21) and out0.mode == "RGBA" and (np.asarray(out0)[..., 3] == 200).all()
    assert run.model.source == "folder" and run.model.revision.startswith("sha256:")
    assert run.perceptual.name == "dssim"


def test_out_of_memory_splits_the_batch_and_loses_nothing(small_vae_dir, monkeypatch):
    # The device allocator is the boundary we cannot reach on a CPU: simulate a GPU on which more
    # than two images of this size do not fit.
    real_purify = pipeline.purify

    def purify_on_small_gpu(vae, distance, x, *args, **kwargs):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_purify(vae, distance, x, *args, **kwargs)

    images = [decode_image(png_bytes(photo(24, 16, seed=s)), max_bytes=10**7, max_pixels=10**6) for s in range(5)]
    reporter = StepRecorder()
    expected = run_purification(images, params(iters=3), vae=str(small_vae_dir), perceptual="dssim",
                                options=EngineOptions(device="cpu", batch_size=1))
    monkeypatch.setattr(pipeline, "purify", purify_on_small_gpu)
    run = run_purification(images, params(iters=3), vae=str(small_vae_dir), perceptual="dssim",
                           options=EngineOptions(device="cpu", batch_size=5),
                           reporter=reporter, report_every=3)
    assert len(run.images) == 5 and run.engine.oom_splits == 2  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert run.engine.precision == "fp32"
    assert reporter.seen[-1] == (15, 15)  # progress counts image-iterations, whatever the batches became
    for got, want in zip(run.images, expected.images):
        assert np.abs(got.rgb.astype(int) - want.rgb).max() <= 1  # batch-correct: the same image either way, to rounding


def test_cpu_batches_hold_a_pixel_budget(small_vae_dir):
    images = [decode_image(png_bytes(photo(32, 32, seed=s)), max_bytes=10**7, max_pixels=10**6) for s in range(5)]
    images += [decode_image(png_bytes(photo(64, 64, seed=s)), max_bytes=10**7, max_pixels=10**6) for s in range(2)]
    run = run_purification(images, params(iters=1), vae=str(small_vae_dir), perceptual="dssim",
                           options=EngineOptions(device="cpu", batch_size=4, cpu_batch_pixels=3 * 32 * 32))
    assert run.engine.batch_sizes == {"32x32": 3, "64x64": 1} and len(run.images) == 7


def test_batch_size_from_free_memory():
    gib = 2**30
    assert fitting_batch_size(per_image_bytes=3 * gib, free_bytes=80 * gib, limit=64, headroom=0.8) == 21
    assert fitting_batch_size(per_image_bytes=3 * gib, free_bytes=80 * gib, limit=8, headroom=0.8) == 8
    assert fitting_batch_size(per_image_bytes=30 * gib, free_bytes=10 * gib, limit=8, headroom=0.8) == 1


def test_compile_failure_falls_back_to_eager(small_vae_dir, random_lpips, monkeypatch):
    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32))
    eager = purify(vae, random_lpips, x, params(iters=3))

    def broken_compiler():  # what a missing C++ toolchain or an unsupported op looks like to us
        def step(*args):
            raise RuntimeError("inductor: compilation failed")
        return step

    monkeypatch.setattr(purify_module, "compiled_losses", broken_compiler)
    out = purify(vae, random_lpips, x, params(iters=3), compile=True)
    assert out.compiled is False and out.iterations == 3
    torch.testing.assert_close(out.images, eager.images)


def test_bf16_autocast_on_cpu_follows_the_fp32_run(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir))
    x = to_tensor(photo(32, 32, seed=6))
    fp32 = purify(vae, random_lpips, x, params(iters=20, lr=0.01), log_every=5)
    bf16 = purify(vae, random_lpips, x, params(iters=20, lr=0.01), log_every=5, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.traces[0][-1]["loss"] < bf16.traces[0][0]["loss"]
    # bf16 rounds activations to ~3 significant digits; the pixels (an fp32 master copy) stay within
    # a grey level of the fp32 run on average, and the objective within 1%.
    assert (bf16.images - fp32.images).abs().mean() < 2 / 255
    assert bf16.traces[0][-1]["loss"] == pytest.approx(fp32.traces[0][-1]["loss"], rel=0.01)
    with pytest.raises(ValueError, match="precision"):
        purify(vae, random_lpips, x, params(iters=1), precision="fp8")


def test_dssim_stays_fp32_under_autocast():
    from worker.engine.perceptual import load_perceptual

    dssim = load_perceptual("dssim")
    x, ref = to_tensor(photo(40, 40, seed=1)), to_tensor(photo(40, 40, seed=2))
    scorer = dssim.bind(ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = scorer(x)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, scorer(x))


def test_vae_attention_runs_through_sdpa(small_vae_dir):
    vae, _ = load_vae(str(small_vae_dir))
    assert {type(p).__name__ for p in vae.model.attn_processors.values()} == {"AttnProcessor2_0"}


def test_checkpointing_changes_memory_not_results(small_vae_dir, random_lpips):
    x = to_tensor(photo(32, 32, seed=4))
    plain = purify(load_vae(str(small_vae_dir))[0], random_lpips, x, params(iters=3))
    vae, _ = load_vae(str(small_vae_dir), checkpointing=True)
    assert vae.model.encoder.gradient_checkpointing and vae.model.decoder.gradient_checkpointing
    torch.testing.assert_close(purify(vae, random_lpips, x, params(iters=3)).images, plain.images,
                               atol=1e-5, rtol=0)


def test_tiling_runs_large_images_in_tiles(small_vae_dir, random_lpips):
    vae, _ = load_vae(str(small_vae_dir), tiling=True)
    big = vae.model.config.sample_size + 32  # above the sample size: diffusers encodes and decodes in tiles
    x = to_tensor(photo(big, big, seed=5))
    out = purify(vae, random_lpips, x, params(iters=4, lr=0.005), log_every=1)
    assert out.images.shape == x.shape and torch.isfinite(out.images).all()
    assert out.traces[0][-1]["consistency"] < out.traces[0][0]["consistency"]


def test_missing_model_is_a_clear_error_never_a_substitute(tmp_path):
    with pytest.raises(ModelUnavailable, match="huggingface-cli download"):
        load_vae("no-such-org/no-such-model")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_vae(str(tmp_path / "absent"))


def test_presets_schedules_and_overrides():
    p = PurifyOverrides(preset="glaze").resolve()  # the published loop unless a schedule is named
    assert (p.delta, p.alpha, p.lr, p.iters, p.noise, p.beta1, p.beta2) == (0.1, 0.1, 0.01, 3000, 0.1, 0.9, 0.999)
    p = PurifyOverrides(preset="glaze").resolve(schedule="fast")  # a service whose default is fast
    assert (p.schedule, p.lr, p.iters, p.beta1, p.beta2) == ("fast", 0.042, 600, 0.0, 0.9)
    assert PurifyOverrides(preset="glaze", schedule="published").resolve(schedule="fast").schedule == "published"
    p = PurifyOverrides(preset="photoguard", schedule="fast", iters=7, alpha=0.2, beta2=0.95).resolve()
    assert (p.delta, p.alpha, p.lr, p.iters, p.noise, p.beta1, p.beta2) == (0.1, 0.2, 0.021, 7, 0.05, 0.0, 0.95)
    assert PurifyOverrides(preset="photoguard").resolve("dssim").delta == 0.05
    assert PurifyOverrides(preset="glaze").resolve("dssim").alpha == 1.0  # the offline distance's own alpha
    assert PurifyOverrides(preset="glaze").resolve("lpips-vgg").alpha == 0.1
    with pytest.raises(ValueError):
        PurifyOverrides(preset="mist")
    with pytest.raises(ValueError):
        PurifyOverrides(lr=-1)
