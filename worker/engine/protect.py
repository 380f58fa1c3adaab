"""Protections to evaluate against: encoder attacks on the VAE (DESIGN.md section 3).

Budgets are given in [0, 1] pixel units as the papers state them (8/255, 16/255); the engine works
in [-1, 1], so an L-inf budget eps becomes 2*eps there.
"""
from __future__ import annotations

import torch

from .metrics import encode


def grey_target(x: torch.Tensor) -> torch.Tensor:
    """PhotoGuard's default target: a mid-grey image."""
    return torch.zeros_like(x)


def encoder_attack(vae, x: torch.Tensor, target: torch.Tensor, *, eps: float = 8 / 255,
                   step: float | None = None, steps: int = 200, seed: int = 0) -> torch.Tensor:
    """PhotoGuard's encoder attack: L-inf PGD pulling E(x + d) toward E(target), |d| <= eps.

    Signed gradient steps whose size decays linearly from `step` to step/100 (PhotoGuard's schedule),
    projected onto the budget and the valid pixel range after every step.
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
        size = step2 - (step2 - step2 / 100) * i / steps
        with torch.no_grad():
            delta = (delta - size * grad.sign()).clamp(-eps2, eps2)
            delta = (x + delta).clamp(-1, 1) - x
    return (x + delta).detach().clamp(-1, 1)
