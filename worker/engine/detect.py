"""Detecting protective noise by its consistency error mean((x - D(E(x)))^2) (DESIGN.md section 3).

One forward pass per image, no optimisation: cheap enough to triage every upload and purify only
what is flagged. An image is flagged 'protected' when its score is above a threshold calibrated on
clean images for a target false positive rate; a threshold holds only for the model it was
calibrated with.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .metrics import consistency_error
from .purify import vae_multiple


def consistency_scores(vae, images: list[torch.Tensor], batch: int = 16) -> list[float]:
    """The consistency error of each image (1 x 3 x H x W in [-1, 1], any sizes; same-size images share
    batches). The VAE needs sides divisible by its downsampling factor, so the few rows and columns
    beyond the last multiple are left out of the score."""
    m = vae_multiple(vae)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(images):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    scores = [0.0] * len(images)
    for (h, w), idx in groups.items():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            x = torch.cat([images[i] for i in part])[..., :h - h % m, :w - w % m]
            for i, s in zip(part, consistency_error(vae, x.to(vae.device, vae.dtype)).tolist()):
                scores[i] = s
    return scores


@dataclass(frozen=True)
class Calibration:
    threshold: float     # flag an image when its score is strictly above this
    fpr: float           # fraction of the calibration images flagged (at most target_fpr)
    target_fpr: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def calibrate(clean_scores: list[float], target_fpr: float) -> Calibration:
    """The threshold that flags at most `target_fpr` of the clean images: the (k+1)-th highest clean
    score, k = floor(target_fpr * n), so exactly k are above it (fewer when scores tie)."""
    if not clean_scores or not 0 < target_fpr < 1:
        raise ValueError("calibration needs clean scores and a target FPR strictly between 0 and 1")
    ranked = sorted(clean_scores, reverse=True)
    k = math.floor(target_fpr * len(ranked) + 1e-9)
    threshold = ranked[min(k, len(ranked) - 1)]
    fpr = sum(s > threshold for s in ranked) / len(ranked)
    return Calibration(threshold=threshold, fpr=fpr, target_fpr=target_fpr, n=len(ranked))


def verdicts(scores: list[float], threshold: float) -> list[str]:
    return ["protected" if s > threshold else "clean" for s in scores]
