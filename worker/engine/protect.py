"""Protections to evaluate against, each named for what it runs (docs/algorithm.md).

- ``photoguard-8`` / ``photoguard-16``: PhotoGuard's L-inf *encoder* attack as its authors run it
  (MadryLab/photoguard, notebooks' `pgd`: 1000 iterations, step eps/3 (0.02 for eps 0.06 in [-1, 1]
  units) decaying linearly to 1/100 of it, random start in the box, projection onto the box and
  [-1, 1] after each step) with eps 8/255 or 16/255, pulling E(x + d) toward the latent of a mid-grey
  image (pixels 0 in [-1, 1]). ``photoguard-8-200steps`` / ``photoguard-16-200steps`` are the cheaper
  variants: the same schedule over 200 steps. PhotoGuard's img2img demo pulls toward the zero latent
  instead, its inpainting demo toward a chosen image's; a caller may pass a target image. The IMPRESS
  paper evaluated PhotoGuard's *diffusion* attack (L2 eps 16, 200 steps through the diffusion model),
  which is not this one: it belongs with the diffusion scenario.
- ``glaze-like``: a cloak after the IMPRESS authors' glaze.py (Glaze itself is closed): latent toward
  E(target) under a perceptual budget p, here also an L-inf box, with a budget that holds.
- ``mist-16``: Mist's *textural* loss only (Mist's mode 1), L-inf 16/255, 100 constant steps of
  1/255 toward E(target), each latent a seeded posterior sample as Mist's get_first_stage_encoding
  draws in every mode (a deterministic encoder's sample is its encoding). Mist's default (mode 2)
  fuses it with a semantic loss through the diffusion model; that is not this.

Budgets are given in [0, 1] pixel units as the papers state them (8/255, 16/255); the engine works
in [-1, 1], so an L-inf budget eps becomes 2*eps there. Parameters, defaults and names are models in
impress/methods.py (with the pipeline kind of a diffusion protection); `PROTECTION_FUNCTIONS` pairs
each with its function. `apply_protection` returns images quantised to 8 bits, as saved;
`Protection.stated_budget` says what a preset promises and `budget` measures what it spent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from impress.methods import (PHOTOGUARD_STEP_OF_EPS, AdvdmParams, GlazeLikeParams, MethodChoice, MethodParams,
                             MistParams, PhotoguardAdaptiveParams, PhotoguardDiffusionParams, PhotoguardParams,
                             SdsMinusParams, l2_budget_scale)
from impress.progress import SILENT, Reporter
from impress.results import BudgetPerImage, StatedBudget

from .amortised.serve import ThroughPurifier, load_purifier
from .diffusion.attacks import advdm, photoguard_diffusion, sds_minus
from .autoencoder import Autoencoder
from .metrics import encode, pair_metrics
from .perceptual import Scorer
from .tensors import quantize_8bit


def grey_target(x: torch.Tensor) -> torch.Tensor:
    """Our PhotoGuard target when none is given: a mid-grey image (its latent is the target)."""
    return torch.zeros_like(x)


def encoder_attack(vae: Autoencoder, x: torch.Tensor, target: torch.Tensor, *, eps: float = 8 / 255,
                   step: float | None = None, steps: int = 1000, seed: int = 0,
                   decay: bool = True, sample: bool = False, reporter: Reporter = SILENT) -> torch.Tensor:
    """PhotoGuard's encoder attack: L-inf PGD pulling E(x + d) toward E(target), |d| <= eps.

    Signed gradient steps whose size decays linearly from `step` (default eps/3) to step/100
    (PhotoGuard's schedule; constant with decay=False), projected onto the budget and the valid pixel
    range after every step. Latents are the posterior's mode, or with `sample` a fresh seeded
    posterior draw of both images at every step (Mist's encoding).
    """
    eps2 = 2 * eps
    step2 = 2 * (step if step is not None else eps * PHOTOGUARD_STEP_OF_EPS)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps2).to(x)
    z_target = None if sample else encode(vae, target)
    for i in range(steps):
        delta.requires_grad_(True)
        adv = (x + delta).clamp(-1, 1)
        if sample:  # Autoencoder.sample: the encoding itself for a deterministic encoder (taef2)
            z = vae.sample(adv, gen)
            with torch.no_grad():
                z_target = vae.sample(target, gen)
        else:
            z = vae.encode(adv)
        loss = ((z - z_target) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        size = step2 - (step2 - step2 / 100) * i / steps if decay else step2
        with torch.no_grad():
            delta = (delta - size * grad.sign()).clamp(-eps2, eps2)
            delta = (x + delta).clamp(-1, 1) - x
        reporter.advance(i + 1, steps)
    return (x + delta).detach().clamp(-1, 1)


def default_mist_pattern(h: int, w: int) -> torch.Tensor:
    """Mist's target when none is given: a deterministic high-contrast texture (1 x 3 x h x w, values
    +-1), diagonal stripes of period 8 crossed with a period-16 checker, phase-shifted per channel."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    shift = torch.tensor([0.0, 8 / 3, 16 / 3]).view(3, 1, 1)
    stripes = torch.sin(2 * math.pi * (xx + yy + shift) / 8)
    checker = torch.sin(2 * math.pi * xx / 16) * torch.sin(2 * math.pi * yy / 16)
    return torch.where(stripes * checker >= 0, 1.0, -1.0)[None]


def default_glaze_target(h: int, w: int) -> torch.Tensor:
    """The glaze-like cloak's target when the caller gives none: a saturated swirl of colour bands
    (1 x 3 x h x w in [-0.9, 0.9]), deterministic and far from photo statistics. A stand-in only: the
    authors' target is a style-transferred copy of x itself, which needs a style-transfer model we do
    not have offline; a caller who has that copy passes it as `target`."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r, theta = (xx**2 + yy**2).sqrt(), torch.atan2(yy, xx)
    phase = torch.tensor([0.0, 2.1, 4.2]).view(3, 1, 1)
    return (0.9 * torch.sin(9 * r + 3 * theta + phase))[None]


# Per step while an image's perceptual distance exceeds p its hinge weight grows by this factor, and
# shrinks back toward alpha once it holds: the latent term can be ~100x the hinge at alpha 30.
ALPHA_GROWTH = 1.1


def glaze_like_cloak(vae: Autoencoder, distance, x: torch.Tensor, target: torch.Tensor, *, p: float = 0.05,
                     eps: float = 16 / 255, alpha: float = 30, steps: int = 500, lr: float = 0.01,
                     seed: int = 0, reporter: Reporter = SILENT) -> torch.Tensor:
    """Glaze-like style cloak (Glaze itself is closed), after the IMPRESS authors' glaze.py: Adam on d
    from U(+-p) minimising ||E(x + d) - E(target)||^2 + alpha_i * max(P(x, x + d) - p, 0).

    Unlike glaze.py, the budget holds: d is projected onto the L-inf box eps (as Glaze's papers bound
    the change besides the perceptual penalty) and the valid range after every step; each image's
    alpha_i grows while its hinge is violated; and a final line search keeps the largest fraction of d
    whose 8-bit image is within p (`fit_perceptual_budget`). The latent term is a mean over latent
    elements, so alpha keeps its meaning at any size. `target` is 1 or B images of x's size.
    """
    eps2 = 2 * eps
    z_target = encode(vae, target.to(x).expand_as(x))
    perceptual = distance.bind(x)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = ((torch.rand(x.shape, generator=gen) * 2 - 1) * p).to(x).clamp(-eps2, eps2)  # p: [-1, 1] units, as glaze.py
    delta = ((x + start).clamp(-1, 1) - x).requires_grad_(True)
    weight = torch.full((x.shape[0],), float(alpha), device=x.device)
    opt = torch.optim.Adam([delta], lr=lr)
    for i in range(steps):
        adv = x + delta
        latent = ((vae.encode(adv) - z_target) ** 2).mean(dim=(1, 2, 3))
        excess = perceptual(adv).float() - p
        loss = latent + weight * excess.clamp_min(0)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            weight = torch.where(excess > 0, weight * ALPHA_GROWTH, (weight / ALPHA_GROWTH).clamp_min(alpha))
            delta.copy_((x + delta.clamp(-eps2, eps2)).clamp(-1, 1) - x)
        reporter.advance(i + 1, steps)
    return fit_perceptual_budget(perceptual, x, delta.detach(), p)


@torch.no_grad()
def fit_perceptual_budget(perceptual: Scorer, x: torch.Tensor, delta: torch.Tensor, p: float,
                          halvings: int = 10) -> torch.Tensor:
    """x + t_i * delta_i with, per image, the largest t_i in [0, 1] found by bisection whose 8-bit image is
    within perceptual distance p of x (t = 0, x itself, always is when x is 8-bit). `perceptual` is the
    distance bound to x."""
    def within(t: torch.Tensor) -> torch.Tensor:
        return perceptual(quantize_8bit(x + t.view(-1, 1, 1, 1) * delta)).float() <= p

    b = x.shape[0]
    low, high = torch.zeros(b, device=x.device), torch.ones(b, device=x.device)
    low = torch.where(within(high), high, low)
    for _ in range(halvings):
        mid = (low + high) / 2
        ok = within(mid) & (low < 1)
        low, high = torch.where(ok, mid, low), torch.where(ok | (low == 1), high, mid)
    return x + low.view(-1, 1, 1, 1) * delta


def mist_textural(vae, x: torch.Tensor, target: torch.Tensor | None = None, *, eps: float = 16 / 255,
                  steps: int = 100, step: float = 1 / 255, seed: int = 0, reporter: Reporter = SILENT) -> torch.Tensor:
    """Mist's textural loss alone (Mist's mode 1): L-inf PGD with constant steps pulling E(x + d) toward
    E(target), `default_mist_pattern` when none is given (Mist ships its own MIST.png), both encoded
    by a seeded posterior sample at every step, as Mist encodes in every mode. Mist's default mode 2
    also maximises the diffusion model's semantic loss; that is not here (it needs a diffusion model)."""
    target = default_mist_pattern(*x.shape[-2:]) if target is None else target
    return encoder_attack(vae, x, target.to(x).expand_as(x), eps=eps, step=step, steps=steps, seed=seed,
                          decay=False, sample=True, reporter=reporter)


def photoguard(vae, x: torch.Tensor, target: torch.Tensor | None = None, **params) -> torch.Tensor:
    """PhotoGuard's encoder attack toward E(target), E(mid-grey image) when none is given."""
    target = grey_target(x) if target is None else target
    return encoder_attack(vae, x, target.to(x).expand_as(x), **params)


def photoguard_adaptive(vae, x: torch.Tensor, target: torch.Tensor | None = None, *, weights: str,
                        **params) -> torch.Tensor:
    """PhotoGuard's encoder attack aimed through the amortised purifier f (white box): PGD on d pulling
    E(f(x + d)) toward E(f(target)), so that what survives purification is what the attack wants.
    f of the mid-grey target is mid-grey within a grey level, so the target latent is PhotoGuard's."""
    net, _ = load_purifier(weights, str(x.device))
    return photoguard(ThroughPurifier(vae, net), x, target, **params)


def glaze_like(vae, distance, x: torch.Tensor, target: torch.Tensor | None = None, **params) -> torch.Tensor:
    """The glaze-like cloak toward `target`, or the stand-in `default_glaze_target` when none is given."""
    target = default_glaze_target(*x.shape[-2:]) if target is None else target
    return glaze_like_cloak(vae, distance, x, target, **params)


@dataclass(frozen=True)
class Protection:
    fn: Callable[..., torch.Tensor]   # (vae, [distance,] x, target, reporter=, **params) -> protected x; for a
    #                                   diffusion protection (its params' pipeline_kind): (pipe, x, target, reporter=, **params)
    needs_distance: bool = False
    perceptual_budget: str | None = None  # the parameter bounding the perceptual distance, if any
    l2_budget: bool = False               # eps is an L2 norm per 512 x 512 image in [-1, 1] units (PhotoGuard's
    #                                       diffusion attack), scaled to each image's size

    def stated_budget(self, params: MethodParams, size: tuple[int, int] | None = None) -> StatedBudget:
        """What this protection promises, in the figures `budget` measures: L-inf in /255 units or, for an
        L2 budget, the L2 norm per 512 x 512 image (`l2_255_per_512x512`) and, given the images' `size`,
        the L2 norm on them (`l2_255`); for one with a perceptual bound, that bound."""
        perceptual = getattr(params, self.perceptual_budget) if self.perceptual_budget is not None else None
        if not self.l2_budget:
            return StatedBudget(linf_255=params.eps * 255, perceptual=perceptual)
        return StatedBudget(l2_255_per_512x512=params.eps * 127.5, perceptual=perceptual,
                            l2_255=None if size is None else params.eps * l2_budget_scale(*size) * 127.5)


# The function of each protection's parameter model (impress/methods.py names them and holds the defaults).
PROTECTION_FUNCTIONS: dict[type[MethodParams], Protection] = {
    PhotoguardParams: Protection(photoguard),
    PhotoguardAdaptiveParams: Protection(photoguard_adaptive),
    GlazeLikeParams: Protection(glaze_like, needs_distance=True, perceptual_budget="p"),
    MistParams: Protection(mist_textural),
    AdvdmParams: Protection(advdm),
    SdsMinusParams: Protection(sds_minus),
    PhotoguardDiffusionParams: Protection(photoguard_diffusion, l2_budget=True),
}


def stated_budget(choice: MethodChoice, size: tuple[int, int] | None = None) -> StatedBudget:
    """What the chosen protection promises on images of `size` (`Protection.stated_budget`)."""
    return PROTECTION_FUNCTIONS[type(choice.params)].stated_budget(choice.params, size)


def apply_protection(choice: MethodChoice, vae, x: torch.Tensor, distance=None,
                     target: torch.Tensor | None = None, pipelines=None, reporter: Reporter = SILENT) -> torch.Tensor:
    """Protect a batch as `choice` says toward `target` (1 or B images of x's size; the protection's own
    default when None) and return it as saved: quantised to 8 bits, since that is what a user keeps,
    what budgets are measured on, and what detection and purification see. `distance` is required
    by the protections that use one, `pipelines` (diffusion.scenario.PipelineSet) by diffusion ones.
    The `reporter` is told every step."""
    entry, kind = PROTECTION_FUNCTIONS[type(choice.params)], choice.params.pipeline_kind
    params = {**choice.params.model_dump(), "reporter": reporter}
    if kind is not None:
        if pipelines is None:
            raise ValueError(f"protection {choice.name!r} needs a diffusion pipeline")
        return quantize_8bit(entry.fn(pipelines.get(kind), x, target, **params))
    if not entry.needs_distance:
        return quantize_8bit(entry.fn(vae, x, target, **params))
    if distance is None:
        raise ValueError(f"protection {choice.name!r} needs a perceptual distance")
    return quantize_8bit(entry.fn(vae, distance, x, target, **params))


def budget(protected: torch.Tensor, clean: torch.Tensor, distance=None) -> BudgetPerImage:
    """What a change really spent, per image: PSNR, SSIM, L-inf and L2 (/255 units) and, given a
    perceptual distance, that distance."""
    perceptual = None
    if distance is not None:
        with torch.no_grad():
            perceptual = distance.bind(clean)(protected).float().tolist()
    return BudgetPerImage(**pair_metrics(protected, clean), perceptual=perceptual)
