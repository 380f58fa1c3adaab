"""Protections to evaluate against: encoder attacks on the VAE (DESIGN.md section 3).

Budgets are given in [0, 1] pixel units as the papers state them (8/255, 16/255); the engine works
in [-1, 1], so an L-inf budget eps becomes 2*eps there. `PROTECTION_FUNCTIONS` pairs each parameter
model of impress/methods.py with its function; `budget` measures what a protection really spent,
since released samples often exceed theirs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from impress.methods import GlazeLikeParams, MethodChoice, MethodParams, MistParams, PhotoguardParams

from .metrics import encode, pair_metrics


def grey_target(x: torch.Tensor) -> torch.Tensor:
    """PhotoGuard's default target: a mid-grey image."""
    return torch.zeros_like(x)


def encoder_attack(vae, x: torch.Tensor, target: torch.Tensor, *, eps: float = 8 / 255,
                   step: float | None = None, steps: int = 200, seed: int = 0,
                   decay: bool = True) -> torch.Tensor:
    """PhotoGuard's encoder attack: L-inf PGD pulling E(x + d) toward E(target), |d| <= eps.

    Signed gradient steps whose size decays linearly from `step` to step/100 (PhotoGuard's schedule;
    constant with decay=False), projected onto the budget and the valid pixel range after every step.
    """
    eps2 = 2 * eps
    step2 = 2 * (step if step is not None else eps / 4)
    z_target = encode(vae, target)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps2).to(x)
    for i in range(steps):
        delta.requires_grad_(True)
        z = vae.encode((x + delta).clamp(-1, 1)).latent_dist.mode()
        loss = ((z - z_target) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        size = step2 - (step2 - step2 / 100) * i / steps if decay else step2
        with torch.no_grad():
            delta = (delta - size * grad.sign()).clamp(-eps2, eps2)
            delta = (x + delta).clamp(-1, 1) - x
    return (x + delta).detach().clamp(-1, 1)


def default_mist_pattern(h: int, w: int) -> torch.Tensor:
    """Mist's target when none is given: a deterministic high-contrast texture (1 x 3 x h x w, values
    +-1), diagonal stripes of period 8 crossed with a period-16 checker, phase-shifted per channel."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    shift = torch.tensor([0.0, 8 / 3, 16 / 3]).view(3, 1, 1)
    stripes = torch.sin(2 * math.pi * (xx + yy + shift) / 8)
    checker = torch.sin(2 * math.pi * xx / 16) * torch.sin(2 * math.pi * yy / 16)
    return torch.where(stripes * checker >= 0, 1.0, -1.0)[None]


def default_glaze_style(h: int, w: int) -> torch.Tensor:
    """The glaze-like cloak's style when the caller gives none: a saturated swirl of colour bands
    (1 x 3 x h x w in [-0.9, 0.9]), deterministic and far from photo statistics. A stand-in: Glaze
    targets a real artistic style, which a caller supplies as `style`."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r, theta = (xx**2 + yy**2).sqrt(), torch.atan2(yy, xx)
    phase = torch.tensor([0.0, 2.1, 4.2]).view(3, 1, 1)
    return (0.9 * torch.sin(9 * r + 3 * theta + phase))[None]


def glaze_like_cloak(vae, distance, x: torch.Tensor, style: torch.Tensor, *, p: float = 0.05, alpha: float = 30,
                     steps: int = 500, lr: float = 0.01) -> torch.Tensor:
    """Glaze-like style cloak (Glaze itself is closed): Adam on d minimising
    ||E(x + d) - E(style)||^2 + alpha * max(P(x, x + d) - p, 0), x + d kept in range.

    The latent term is a mean over latent elements, so the hinge weight keeps its meaning at any size.
    `style` is 1 or B images of x's size; `distance` is a perceptual distance (bound here to x).
    """
    z_style = encode(vae, style.to(x).expand_as(x))
    perceptual = distance.bind(x)
    delta = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        adv = x + delta
        latent = ((vae.encode(adv).latent_dist.mode() - z_style) ** 2).mean(dim=(1, 2, 3))
        loss = latent + alpha * (perceptual(adv).float() - p).clamp_min(0)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            delta.copy_((x + delta).clamp(-1, 1) - x)
    return (x + delta).detach()


def mist_textural(vae, x: torch.Tensor, pattern: torch.Tensor | None = None, *, eps: float = 16 / 255,
                  steps: int = 100, step: float = 1 / 255, seed: int = 0) -> torch.Tensor:
    """Mist's textural loss: L-inf PGD with constant steps pulling E(x + d) toward E(pattern)
    (`default_mist_pattern` when none is given). The encoder attack with Mist's target and schedule."""
    if pattern is None:
        pattern = default_mist_pattern(*x.shape[-2:])
    return encoder_attack(vae, x, pattern.to(x).expand_as(x), eps=eps, step=step, steps=steps, seed=seed,
                          decay=False)


def photoguard(vae, x: torch.Tensor, **params) -> torch.Tensor:
    """PhotoGuard's encoder attack toward its default grey target."""
    return encoder_attack(vae, x, grey_target(x), **params)


def glaze_like(vae, distance, x: torch.Tensor, style: torch.Tensor | None = None, **params) -> torch.Tensor:
    """The glaze-like cloak toward `style`, or `default_glaze_style` when none is given."""
    style = default_glaze_style(*x.shape[-2:]) if style is None else style
    return glaze_like_cloak(vae, distance, x, style, **params)


@dataclass(frozen=True)
class Protection:
    fn: Callable[..., torch.Tensor]   # (vae, [distance,] x, **params) -> protected x
    needs_distance: bool = False


# The function of each protection's parameter model (impress/methods.py names them and holds the defaults).
PROTECTION_FUNCTIONS: dict[type[MethodParams], Protection] = {
    PhotoguardParams: Protection(photoguard),
    GlazeLikeParams: Protection(glaze_like, needs_distance=True),
    MistParams: Protection(mist_textural),
}


def apply_protection(choice: MethodChoice, vae, x: torch.Tensor, distance=None) -> torch.Tensor:
    """Protect a batch as `choice` says; `distance` is required by the protections that use one."""
    entry = PROTECTION_FUNCTIONS[type(choice.params)]
    if not entry.needs_distance:
        return entry.fn(vae, x, **choice.params.model_dump())
    if distance is None:
        raise ValueError(f"protection {choice.name!r} needs a perceptual distance")
    return entry.fn(vae, distance, x, **choice.params.model_dump())


def budget(protected: torch.Tensor, clean: torch.Tensor, distance=None) -> dict[str, list[float]]:
    """What a change really spent, per image: PSNR, SSIM, L-inf and L2 (/255 units) and, given a
    perceptual distance, that distance under its own name (``lpips-vgg``, ``dssim``)."""
    out = pair_metrics(protected, clean)
    if distance is not None:
        with torch.no_grad():
            out[distance.name] = distance.bind(clean)(protected).float().tolist()
    return out
