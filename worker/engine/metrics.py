"""Image-pair and autoencoder metrics, per image. Pixels in [-1, 1]; budgets reported in /255 units."""
from __future__ import annotations

import statistics
from typing import Optional

import torch

from .autoencoder import Autoencoder
from .perceptual import SsimDistance


def rounded_mean(values: list[Optional[float]]) -> Optional[float]:
    """The mean of the values that are not None, to 6 decimals (None when there are none): how reports
    summarise per-image figures."""
    present = [v for v in values if v is not None]
    return round(float(statistics.fmean(present)), 6) if present else None


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB on the [0, 1] scale (peak 1), per image."""
    mse = (((a - b) / 2) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian 11x11, sigma 1.5, on [0, 1]), per image, channels averaged."""
    dist = SsimDistance().to(a.device)
    return dist.similarity(a, dist.prepare(b))


def linf_255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b).abs() * 127.5).flatten(1).amax(dim=1)


def l2_255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) * 127.5).flatten(1).norm(dim=1)


@torch.no_grad()
def encode(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """The deterministic latent E(x), without gradients."""
    return vae.encode(x)


@torch.no_grad()
def reconstruction(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """D(E(x)) clamped to the pixel range, without gradients: what an editing model sees of x."""
    return vae.reconstruct(x).clamp(-1, 1)


@torch.no_grad()
def consistency_error(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """mean((x - D(E(x)))^2) per image: IMPRESS's signal, and a detector of protective noise."""
    return ((vae.reconstruct(x).float() - x.float()) ** 2).mean(dim=(1, 2, 3))


def latent_distance(vae: Autoencoder, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
    """RMS distance between E(x) and E(x_ref), per image."""
    return ((encode(vae, x) - encode(vae, x_ref)) ** 2).mean(dim=(1, 2, 3)).sqrt()


def pair_metrics(a: torch.Tensor, b: torch.Tensor) -> dict[str, list[float]]:
    """How far a is from b: PSNR, SSIM, L-inf and L2 (in /255 units)."""
    return {"psnr_db": psnr(a, b).tolist(), "ssim": ssim(a, b).tolist(),
            "linf_255": linf_255(a, b).tolist(), "l2_255": l2_255(a, b).tolist()}


def roc_auc(negatives: list[float], positives: list[float]) -> float:
    """Probability that a positive scores above a negative (ties count half): the ROC AUC. In float64,
    so scores that differ below float32's resolution still rank apart."""
    neg, pos = torch.tensor(negatives, dtype=torch.float64), torch.tensor(positives, dtype=torch.float64)
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def roc_curve(negatives: list[float], positives: list[float]) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) of the rule 'score > t' over every threshold t, from
    flagging nothing to flagging everything: the curve whose area `roc_auc` gives."""
    neg, pos = torch.tensor(negatives, dtype=torch.float64), torch.tensor(positives, dtype=torch.float64)
    inf = torch.tensor([float("inf")], dtype=torch.float64)
    thresholds = torch.cat([inf, torch.cat([neg, pos]).unique().flip(0), -inf])
    fpr = (neg[None, :] > thresholds[:, None]).double().mean(dim=1)
    tpr = (pos[None, :] > thresholds[:, None]).double().mean(dim=1)
    return fpr.tolist(), tpr.tolist()
