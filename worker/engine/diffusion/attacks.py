"""Protections through the UNet: AdvDM, SDS(-) and PhotoGuard's diffusion attack.

Budgets are in [0, 1] pixel units as the papers state them; the engine works in [-1, 1] (x2).
- AdvDM (Liang et al. 2023; Mist's "semantic" mode): L-inf PGD that *maximises* the denoising loss
  E_{t, eps} ||eps_theta(z_t, t, c) - eps||^2 of z = s * E(x), with a fresh timestep and noise every
  step, from a uniform random start. Defaults are Mist's (mist_v3.py: 16/255, 100 steps of 1/255,
  prompt "a painting", a posterior sample of E(x)).
- SDS(-) (Xue et al., ICLR 2024): the score-distillation gradient (eps_theta - eps) dz/dx, which skips
  the UNet's backward pass, *descended* (the minus variant, which they found stronger): about half
  AdvDM's cost per step. Same budget and schedule as AdvDM here.
- PhotoGuard's diffusion attack (Salman et al. 2023, the one the IMPRESS paper evaluated): L2 PGD on
  the inpainting pipeline's *masked* image, pulling the output of a differentiable 4-step inpainting
  run (guidance 7.5, eta 1, empty prompt) toward a target (the zero image), gradients averaged over
  10 draws, normalised steps of 1, eps 16 (in [-1, 1] units on PhotoGuard's 512 x 512 images; both
  scaled by sqrt(H W) / 512 on other sizes, so the change per pixel stays PhotoGuard's), 200 steps;
  only pixels outside the mask change (the kept subject), as in their notebook. `masked_weight` adds
  the IMPRESS authors' term (pg_mask_diff_helen.py: + 10 ||x_masked - edit||); PhotoGuard's has none.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from impress.methods import l2_budget_scale
from impress.progress import SILENT, Reporter

from ..tensors import quantize_8bit
from .common import denoising_error, latents, randn, random_timesteps, text_embeddings, training_scheduler
from .editing import centre_keep_mask

MIST_PROMPT = "a painting"  # Mist's style template (mist_v3.py, imagenet_templates_small_style)


def _linf_pgd(x: torch.Tensor, gradient, *, eps: float, step: float, steps: int, seed: int,
              ascend: bool, reporter: Reporter) -> torch.Tensor:
    """Signed-gradient steps of `step`, projected onto |d| <= eps and the pixel range, from a uniform
    random start (advertorch's rand_init, which Mist uses). eps and step in [0, 1] units.
    `gradient(x_adv, i)` is the gradient of the loss at step i."""
    eps2, step2, sign = 2 * eps, 2 * step, (1 if ascend else -1)
    delta = (torch.rand(x.shape, generator=torch.Generator(device="cpu").manual_seed(seed)) * 2 - 1) * eps2
    adv = (x + delta.to(x)).clamp(-1, 1)
    for i in range(steps):
        grad = gradient(adv, i)
        with torch.no_grad():
            adv = adv + sign * step2 * grad.sign()
            adv = (x + (adv - x).clamp(-eps2, eps2)).clamp(-1, 1)
        reporter.advance(i + 1, steps)
    # As saved: 8 bits. From an 8-bit x the box's faces are levels themselves, so rounding stays inside.
    return quantize_8bit(adv.detach())


def _unet_attack(pipe, x: torch.Tensor, *, eps: float, step: float, steps: int, prompt: str, seed: int,
                 score_distillation: bool, reporter: Reporter) -> torch.Tensor:
    """L-inf PGD on the denoising loss at a fresh (timestep, noise, posterior sample) every step: its
    exact gradient ascended (AdvDM), or its score-distillation gradient descended (SDS(-))."""
    scheduler, cond = training_scheduler(pipe), text_embeddings(pipe, prompt, len(x))

    def gradient(adv, i):
        adv = adv.clone().requires_grad_(True)
        z = latents(pipe, adv, seed + i)
        t = random_timesteps(scheduler, len(x), seed + i, x.device)
        with torch.set_grad_enabled(not score_distillation):
            err = denoising_error(pipe.unet, scheduler, z, cond.to(z.dtype), t, randn(z.shape, seed + i, z))
        # SDS: d/dx of <stop_grad(eps_theta - eps), z> is (eps_theta - eps) dz/dx, no UNet Jacobian.
        objective = (err.to(z.dtype) * z).sum() if score_distillation else (err ** 2).mean()
        return torch.autograd.grad(objective, adv)[0]

    return _linf_pgd(x, gradient, eps=eps, step=step, steps=steps, seed=seed, ascend=not score_distillation,
                     reporter=reporter)


def _no_target(name: str, target: Optional[torch.Tensor]) -> None:
    if target is not None:
        raise ValueError(f"{name} has no target image: it pushes the denoising loss, not toward an image")


def advdm(pipe, x: torch.Tensor, target: Optional[torch.Tensor] = None, *, eps: float = 16 / 255,
          step: float = 1 / 255, steps: int = 100, prompt: str = MIST_PROMPT, seed: int = 0,
          reporter: Reporter = SILENT) -> torch.Tensor:
    """AdvDM: maximise the denoising loss of the pipeline's UNet (module docstring)."""
    _no_target("advdm", target)
    return _unet_attack(pipe, x, eps=eps, step=step, steps=steps, prompt=prompt, seed=seed, score_distillation=False,
                        reporter=reporter)


def sds_minus(pipe, x: torch.Tensor, target: Optional[torch.Tensor] = None, *, eps: float = 16 / 255,
              step: float = 1 / 255, steps: int = 100, prompt: str = MIST_PROMPT, seed: int = 0,
              reporter: Reporter = SILENT) -> torch.Tensor:
    """SDS(-): descend the score-distillation gradient (module docstring); no backward through the UNet."""
    _no_target("sds-minus", target)
    return _unet_attack(pipe, x, eps=eps, step=step, steps=steps, prompt=prompt, seed=seed, score_distillation=True,
                        reporter=reporter)


def _scheduler_step_kwargs(scheduler, eta: float, generator) -> dict:
    # Only DDIM-like schedulers take eta (and a generator for their noise); PNDM takes neither.
    params = set(inspect.signature(scheduler.step).parameters)
    return {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}


def differentiable_inpaint(pipe, masked: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor, *,
                           steps: int, guidance: float, eta: float, seed: int) -> torch.Tensor:
    """The inpainting pipeline's sampling loop with gradients to the masked image: classifier-free
    guidance on [uncond, cond] embeddings (2B x ...), DDIM-like steps, decoded to pixels."""
    from copy import deepcopy

    scheduler = deepcopy(pipe.scheduler)  # its timesteps and step counters are per-run state
    scheduler.set_timesteps(steps, device=masked.device)
    b, (h, w) = len(masked), masked.shape[-2:]
    factor = pipe.vae_scale_factor
    masked_latents = latents(pipe, masked, seed)
    small_mask = torch.nn.functional.interpolate(mask, size=(h // factor, w // factor)).to(masked_latents)
    z = randn((b, pipe.vae.config.latent_channels, h // factor, w // factor), seed, masked_latents)
    z = z * scheduler.init_noise_sigma
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for t in scheduler.timesteps:
        unet_in = torch.cat([scheduler.scale_model_input(torch.cat([z] * 2), t),
                             torch.cat([small_mask] * 2), torch.cat([masked_latents] * 2)], dim=1)
        uncond, text = pipe.unet(unet_in, t, encoder_hidden_states=cond).sample.chunk(2)
        noise = uncond + guidance * (text - uncond)
        z = scheduler.step(noise, t, z, **_scheduler_step_kwargs(scheduler, eta, gen)).prev_sample
    return pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample


def photoguard_diffusion(pipe, x: torch.Tensor, target: Optional[torch.Tensor] = None,
                         mask: Optional[torch.Tensor] = None, *, eps: float = 16.0, step: float = 1.0,
                         steps: int = 200, grad_reps: int = 10, inference_steps: int = 4, guidance: float = 7.5,
                         eta: float = 1.0, masked_weight: float = 0.0, prompt: str = "",
                         seed: int = 0, reporter: Reporter = SILENT) -> torch.Tensor:
    """PhotoGuard's diffusion attack on an inpainting pipeline (module docstring), pulling the edit toward
    `target` (1 or B images; the zero image, PhotoGuard's default, when None), plus `masked_weight` times
    the edit's distance to the attacked masked image. `eps` and `step` are L2 norms in [-1, 1] pixel
    units per 512 x 512 image, as PhotoGuard states them, scaled to x's size; `mask` 1 = regenerated
    (default `centre_keep_mask`). Returns the clean pixels inside the mask and the attacked ones outside."""
    scale = l2_budget_scale(*x.shape[-2:])
    eps, step = eps * scale, step * scale
    mask = (centre_keep_mask(len(x), *x.shape[-2:]) if mask is None else mask).to(x)
    keep = (mask < 0.5).to(x)
    masked = x * keep
    target = torch.zeros_like(x) if target is None else target.to(x).expand_as(x)
    text = text_embeddings(pipe, prompt, len(x))
    cond = torch.cat([text_embeddings(pipe, "", len(x)), text]).to(pipe.unet.dtype)
    adv = masked.clone()
    for i in range(steps):
        grad = torch.zeros_like(x)
        for r in range(grad_reps):
            adv_r = adv.clone().requires_grad_(True)
            out = differentiable_inpaint(pipe, adv_r, mask, cond, steps=inference_steps, guidance=guidance,
                                         eta=eta, seed=seed + i * grad_reps + r)
            out = out.float()
            loss = ((out - target).flatten(1).norm(dim=1)  # per image, as a batch of one
                    + masked_weight * (adv_r - out).flatten(1).norm(dim=1)).sum()
            grad += torch.autograd.grad(loss, adv_r)[0] * keep
        with torch.no_grad():
            norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            adv = adv - step * grad / (norm + 1e-10)
            d = torch.renorm(adv - masked, p=2, dim=0, maxnorm=eps)
            adv = (masked + d).clamp(-1, 1)
        reporter.advance(i + 1, steps)
    return fit_l2_budget(x, x * (1 - keep) + adv * keep, eps)


@torch.no_grad()
def fit_l2_budget(x: torch.Tensor, adv: torch.Tensor, eps: float, shrink: float = 0.98) -> torch.Tensor:
    """`adv` as an 8-bit image whose change from (8-bit) x stays within the L2 budget: rounding to 256
    levels can lengthen the change a little, so an image over budget has its change shrunk until its
    8-bit version fits (the attack promises eps on what a user saves)."""
    delta = adv - x
    for _ in range(200):
        saved = quantize_8bit(x + delta)
        over = (saved - x).flatten(1).norm(dim=1) > eps
        if not over.any():
            return saved
        delta = torch.where(over.view(-1, 1, 1, 1), delta * shrink, delta)
    raise RuntimeError("no 8-bit image within the L2 budget: is x itself an 8-bit image?")
