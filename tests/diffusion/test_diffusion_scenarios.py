"""Every diffusion scenario, protection and purifier runs on the tiny pipelines (mechanics, not quality)."""
from __future__ import annotations

import pytest
import torch

from impress.methods import REGISTRIES, choose, parse_choice
from impress.results import Split, StatedBudget
from impress.scenarios import EditParams, MimicryParams
from worker.engine.diffusion.scenario import PipelineSet
from worker.engine.protect import apply_protection
from worker.engine.purifiers import apply_purifier
from worker.engine.diffusion import attacks, editing, mimicry, purifiers
from worker.engine.diffusion.pipelines import load_pipeline
from worker.engine.perceptual import load_perceptual
from worker.engine.tensors import gaussian_noise, quantize_8bit


DIFFUSION_METHODS = {"protection": ["advdm", "sds-minus", "photoguard-diffusion", "photoguard-diffusion-impress"],
                     "purifier": ["diffpure", "gridpure", "noisy-upscale"]}


def img2img_set(img2img) -> PipelineSet:
    return PipelineSet({"img2img": img2img[1].location})


@pytest.fixture(scope="module")
def img2img(tiny_pipelines):
    return load_pipeline(str(tiny_pipelines["img2img"]), "img2img")


@pytest.fixture(scope="module")
def inpaint(tiny_pipelines):
    return load_pipeline(str(tiny_pipelines["inpaint"]), "inpaint")


@pytest.fixture(scope="module")
def upscale(tiny_pipelines):
    return load_pipeline(str(tiny_pipelines["upscale"]), "upscale")


def test_centre_keep_mask_keeps_the_middle():
    mask = editing.centre_keep_mask(1, 8, 12)
    assert mask.shape == (1, 1, 8, 12)
    assert mask[0, 0, 2:6, 3:9].eq(0).all() and mask.sum() == 8 * 12 - 4 * 6


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_edit_is_deterministic_per_image_and_batch_invariant(img2img, inpaint, images, mode):
    pipe, _ = img2img if mode == "img2img" else inpaint
    settings = EditParams(mode=mode, steps=4)
    both = editing.edit(pipe, images, settings)
    assert both.shape == images.shape and both.min() >= -1 and both.max() <= 1
    torch.testing.assert_close(editing.edit(pipe, images[1:], settings), both[1:], atol=1e-5, rtol=0)


def test_inpainting_uses_the_callers_mask(inpaint, images):
    """The mask reaches the UNet (its extra input channels): another mask, another edit. No region is
    pasted back afterwards, as in the IMPRESS authors' evaluation (pg_generate.py)."""
    pipe, _ = inpaint
    settings = EditParams(mode="inpaint", steps=4)
    default = editing.edit(pipe, images, settings)
    whole = editing.edit(pipe, images, settings, torch.ones(2, 1, 32, 32))
    assert (default - whole).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["advdm", "sds-minus"])
def test_unet_attacks_stay_in_their_linf_budget_and_change_the_image(img2img, images, name):
    adv = apply_protection(choose("protection", name, steps=3), None, images, pipelines=img2img_set(img2img))
    assert (adv - images).abs().max() <= 2 * 16 / 255 + 1e-6
    assert (adv - images).abs().max() > 0 and adv.min() >= -1 and adv.max() <= 1


def test_advdm_raises_the_denoising_loss_that_sds_minus_lowers(img2img, images):
    """Direction check on a fixed (t, noise) draw: AdvDM ascends the loss, SDS(-) descends its surrogate."""
    from worker.engine.diffusion.common import denoising_error, latents, randn, random_timesteps, \
        text_embeddings, training_scheduler

    pipe, _ = img2img
    scheduler, cond = training_scheduler(pipe), text_embeddings(pipe, attacks.MIST_PROMPT, 2)

    def loss(x):
        with torch.no_grad():
            losses = []
            for seed in range(8):
                z = latents(pipe, x, seed)
                t = random_timesteps(scheduler, 2, seed, z.device)
                losses.append((denoising_error(pipe.unet, scheduler, z, cond, t, randn(z.shape, seed, z)) ** 2).mean())
        return float(torch.stack(losses).mean())

    adv = attacks.advdm(pipe, images, steps=10, eps=16 / 255, step=4 / 255)
    assert loss(adv) > loss(images)


def test_photoguard_diffusion_attack_is_l2_bounded_and_only_outside_the_mask(inpaint, images):
    """eps is stated per 512 x 512 image: on 32 px images (1/16 of the side) PhotoGuard's 16 is an L2 norm
    of 1, and a step of 32 (2 here) reaches it at once."""
    pipe, _ = inpaint
    mask = editing.centre_keep_mask(2, 32, 32)
    adv = attacks.photoguard_diffusion(pipe, images, mask=mask, eps=16.0, step=32.0, steps=2, grad_reps=2,
                                       inference_steps=2)
    change = adv - images
    assert 0.5 < change.flatten(1).norm(dim=1).min() and change.flatten(1).norm(dim=1).max() <= 1.0 + 1e-4
    assert change[(mask == 1).expand_as(change)].abs().max() == 0   # the regenerated region is untouched


def test_photoguard_diffusion_takes_the_impress_authors_masked_term(inpaint, images):
    """pg_mask_diff_helen.py adds 10 ||x_masked - edit|| to ||edit - target||: a different gradient."""
    pipe, _ = inpaint
    common = dict(eps=64.0, step=16.0, steps=2, grad_reps=1, inference_steps=2)
    plain = attacks.photoguard_diffusion(pipe, images, **common)
    weighted = attacks.photoguard_diffusion(pipe, images, masked_weight=10.0, **common)
    assert not torch.equal(plain, weighted)


def test_diffpure_strength_is_a_knob(img2img, images):
    pipe, _ = img2img
    light = purifiers.diffpure(pipe, images, strength=0.1, steps=20)
    heavy = purifiers.diffpure(pipe, images, strength=0.8, steps=20)
    assert light.shape == images.shape
    assert (light - images).abs().mean() < (heavy - images).abs().mean()


def test_gridpure_crops_cover_the_image_and_blend_with_the_input(img2img, images):
    assert purifiers.crop_origins(512, 256, 128) == [0, 128, 256]
    assert purifiers.crop_origins(600, 256, 128) == [0, 128, 256, 344]
    with pytest.raises(ValueError, match="at least 256"):
        purifiers.crop_origins(200, 256, 128)
    pipe, _ = img2img
    out = purifiers.gridpure(pipe, images, crop=16, stride=8, strength=0.2, steps=10, iterations=2, gamma=0.1)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    assert 0 < (out - images).abs().mean() < 1
    same = purifiers.gridpure(pipe, images, crop=16, stride=8, strength=0.2, steps=10, iterations=2, gamma=1.0)
    torch.testing.assert_close(same, images)  # gamma 1 keeps the input


def test_noisy_upscale_keeps_the_size_and_adds_8bit_noise_first(upscale, images):
    pipe, _ = upscale
    noisy = quantize_8bit(gaussian_noise(images, 0.1, seed=0))
    levels = (noisy + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert 0.08 < ((noisy - images) / 2).std() < 0.105   # sigma 0.1, less where clipping bites
    out = purifiers.noisy_upscale(pipe, images[:, :, :16, :16], steps=3)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1


def test_every_diffusion_method_runs_through_the_engine_registries(tiny_pipelines, images):
    pipelines = PipelineSet({kind: str(folder) for kind, folder in tiny_pipelines.items()})
    short = dict(steps=2, iterations=1, crop=16, stride=8, grad_reps=1, inference_steps=2, strength=0.5)
    x = images[:1, :, :16, :16]
    for kind, apply in (("protection", lambda c: apply_protection(c, None, x, pipelines=pipelines)),
                        ("purifier", lambda c: apply_purifier(c, x, pipelines=pipelines))):
        for name in DIFFUSION_METHODS[kind]:
            model = REGISTRIES[kind][name].model
            choice = choose(kind, name, **{k: v for k, v in short.items() if k in model.model_fields})
            assert apply(choice).shape == (1, 3, 16, 16), name
            with pytest.raises(ValueError, match="needs a diffusion pipeline"):
                apply_protection(choice, None, x) if kind == "protection" else apply_purifier(choice, x)
    assert set(pipelines.used()) == {"img2img", "inpaint", "upscale"}


def test_lora_mimicry_trains_an_adapter_and_scores_against_the_clean_images(img2img, images):
    pipe, _ = img2img
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    settings = MimicryParams(steps=4, learning_rate=1e-2, eval_samples=2, generate=1, generate_steps=2)
    run = mimicry.mimicry(pipe, images, {"clean": images, "noisy": (images + 0.5 * torch.randn_like(images)).clamp(-1, 1)},
                          settings)
    results = run.sets
    assert set(results) == {"clean", "noisy"} and run.split == Split(train=[1], held_out=[0])
    clean = results["clean"]
    assert clean.clean_loss_base == results["noisy"].clean_loss_base
    assert clean.gain == pytest.approx(clean.clean_loss_base - clean.clean_loss_tuned)
    assert run.samples["clean"].shape == (1, 3, 32, 32) and len(clean.final_losses) == 4
    if clean.gain > 0:
        assert clean.relative_gain == pytest.approx(1.0)
    for k, v in pipe.unet.state_dict().items():   # the cached pipeline's UNet is untouched
        torch.testing.assert_close(v, before[k])


def test_mimicry_scores_every_set_on_clean_works_none_of_them_trained_on(img2img, images, monkeypatch):
    pipe, _ = img2img
    four = torch.cat([images, images.flip(-1)])
    trained, scored = [], []
    monkeypatch.setattr(mimicry, "train_lora", lambda pipe, x, settings, progress: trained.append(x) or (pipe.unet, [0.0]))
    monkeypatch.setattr(mimicry, "clean_loss", lambda pipe, unet, x, settings: scored.append(x) or 1.0)
    run = mimicry.mimicry(pipe, four, {"clean": four, "protected": four + 0.01},
                          MimicryParams(held_out=0.5, generate=0))
    split = run.split
    assert sorted(split.train + split.held_out) == [0, 1, 2, 3] and len(split.held_out) == 2
    assert all(torch.equal(x, four[split.held_out]) for x in scored)
    torch.testing.assert_close(trained[0], four[split.train])
    torch.testing.assert_close(trained[1], four[split.train] + 0.01)
    assert mimicry.held_out_split(4, 0.5, 0) == split            # seeded: the same split again
    with pytest.raises(ValueError, match="at least 2 clean images"):
        mimicry.held_out_split(1, 0.25, 0)


def test_pipeline_sample_size_of_the_tiny_pipelines_is_read_from_their_folders(tiny_pipelines):
    from impress.pipelines import check_size, configured_pipelines, sample_size
    from impress.settings import Settings

    assert sample_size(str(tiny_pipelines["img2img"]), "img2img") == 32   # 8 latent px through the x4 VAE
    names = configured_pipelines(Settings(_env_file=None, pipeline=str(tiny_pipelines["img2img"])))
    check_size(32, 40, [("advdm", "img2img")], names)
    with pytest.raises(ValueError, match="size 24x40 is below it"):
        check_size(24, 40, [("advdm", "img2img")], names)
    with pytest.raises(ValueError, match="multiple of 8"):
        check_size(36, 36, [("advdm", "img2img")], names)


def test_matrix_with_diffusion_methods_and_the_editing_scenario_reports_the_worst_case(tiny_pipelines, images):
    """The benchmark matrix runs diffusion protections and purifiers beside the VAE ones, edits every
    protected and purified set, and reports each protection's worst case per image over the purifiers."""
    from worker.engine.diffusion.scenario import EditingRun
    from worker.engine.matrix import run_matrix
    from worker.engine.models import load_vae
    from worker.engine.report import html_report, markdown_report

    vae, identity = load_vae("taef2")
    dssim = load_perceptual("dssim")
    pipelines = PipelineSet({kind: str(folder) for kind, folder in tiny_pipelines.items()})
    editing = EditingRun(pipelines, EditParams(mode="inpaint", steps=2), dssim, images)
    protections = [parse_choice("photoguard-8:steps=1", "protection"), parse_choice("advdm:steps=1", "protection")]
    purifiers = [parse_choice("jpeg-75", "purifier"), parse_choice("diffpure:steps=10", "purifier")]
    result = run_matrix(vae, identity, dssim, images, ["a", "b"], protections, purifiers, batch=2,
                        pipelines=pipelines, editing=editing)
    assert all(cell.edit is not None and len(cell.edit.psnr_db) == 2 for cell in result.cells)
    assert all(p.edit is not None for p in result.protections.values())
    worst = result.editing.worst_case
    assert set(worst) == {"none", "photoguard-8:steps=1", "advdm:steps=1"}
    for label, cases in worst.items():
        cells = {c.purifier: c.edit.psnr_db for c in result.cells if c.protection == label}
        assert cases.psnr_db.values == [max(v[i] for v in cells.values()) for i in range(2)]
    assert set(result.pipelines) == {"img2img", "inpaint"} and result.editing.pipeline.kind == "inpaint"
    assert "Worst case per image" in markdown_report(result) and "Worst case per image" in html_report(result)


def test_a_kind_nobody_configured_is_model_unavailable(tiny_pipelines):
    from worker.engine.diffusion.scenario import PipelineSet
    from worker.engine.models import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="IMPRESS_UPSCALE_PIPELINE"):
        PipelineSet({"img2img": str(tiny_pipelines["img2img"]), "upscale": None}).get("upscale")


def test_every_protection_keeps_its_stated_budget_on_its_8bit_output(img2img, inpaint, images):
    """Measured on what a user saves (8 bits): L-inf within eps for the PGD attacks, L2 within eps for
    PhotoGuard's (whose rounding is fitted back under the budget)."""
    from worker.engine.tensors import quantize_8bit
    from worker.engine.metrics import l2_255, linf_255

    from worker.engine.protect import stated_budget

    clean = quantize_8bit(images)
    pipelines = PipelineSet({"img2img": str(img2img[1].location), "inpaint": str(inpaint[1].location)})
    for name in DIFFUSION_METHODS["protection"]:
        short = {"steps": 3, "step": 8 / 255} if not name.startswith("photoguard-diffusion") \
            else {"steps": 3, "grad_reps": 1, "inference_steps": 2, "eps": 32.0, "step": 16.0}
        choice = choose("protection", name, **short)
        out = apply_protection(choice, None, clean, pipelines=pipelines)
        torch.testing.assert_close(out, quantize_8bit(out), atol=1e-6, rtol=0)
        stated = stated_budget(choice, size=(32, 32))
        measured = {"linf_255": linf_255, "l2_255": l2_255}
        assert all(measured[k](out, clean).max() <= v + 1e-3 for k, v in stated if k in measured and v is not None), name
        if name.startswith("photoguard-diffusion"):   # 32 per 512 x 512 is 2 on 32 x 32
            assert stated == StatedBudget(l2_255_per_512x512=32 * 127.5, l2_255=2 * 127.5)


def test_an_editing_run_in_chunks_scores_as_in_one_batch(tiny_pipelines, images):
    from worker.engine.diffusion.scenario import EditingRun, PipelineSet

    pipelines = PipelineSet({"inpaint": str(tiny_pipelines["inpaint"])})
    mask = editing.centre_keep_mask(2, 32, 32)
    mask[1] = 1 - mask[1]
    settings, dssim = EditParams(mode="inpaint", steps=3), load_perceptual("dssim")
    noisy = (images + 0.2 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    whole = EditingRun(pipelines, settings, dssim, images, mask).score(noisy)
    chunked = EditingRun(pipelines, settings, dssim, images, mask, batch=1).score(noisy)
    assert whole.psnr_db == pytest.approx(chunked.psnr_db, abs=1e-3)
