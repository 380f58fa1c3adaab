"""Protect decoded images end to end: the models, a target fitted to each size, the 8-bit result and
its measured budget. The entry point of `impress protect` and of protect jobs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from impress.images import DecodedImage
from impress.methods import MethodChoice
from impress.records import MeasuredBudget

from .models import load_vae
from .perceptual import load_perceptual
from .protect import apply_protection, budget, stated_budget
from .tensors import fitted, to_tensor, to_uint8


@dataclass
class ProtectedImage:
    rgb: np.ndarray                 # H x W x 3 uint8: the protected image as saved
    alpha: Optional[np.ndarray]     # the input's alpha channel, kept
    budget: MeasuredBudget


@dataclass
class ProtectionRun:
    images: list[ProtectedImage]    # one per input, in order
    protection: MethodChoice
    stated: dict[str, float]        # what the protection promises (Protection.stated_budget; an L2 budget
    #                                 on the images' size when they share one)
    model: dict
    perceptual: dict
    seconds: float
    device: str
    pipelines: dict                 # diffusion pipelines used, by kind (empty for the VAE protections)


def run_protection(images: list[DecodedImage], spec: MethodChoice, *, vae: str, perceptual: str, device: str,
                   target: Optional[DecodedImage] = None, batch_size: int = 4, pipelines=None) -> ProtectionRun:
    """Protect `images` (any sizes; same-size images share batches) with `spec`, toward `target`
    when given (fitted to each size), else the protection's own default target. Diffusion protections
    run on `pipelines` (diffusion.scenario.PipelineSet)."""
    vae_model, identity = load_vae(vae, device)
    distance = load_perceptual(perceptual, device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.height, im.width), []).append(i)
    results: list[Optional[ProtectedImage]] = [None] * len(images)
    t0 = time.perf_counter()
    for (height, width), indices in groups.items():
        goal = None if target is None else fitted(target, height, width).to(device)
        for k in range(0, len(indices), batch_size):
            batch = indices[k:k + batch_size]
            clean = torch.cat([to_tensor(images[i].rgb) for i in batch]).to(device)
            protected = apply_protection(spec, vae_model, clean, distance, target=goal, pipelines=pipelines)
            spent = budget(protected, clean, distance)
            for j, i in enumerate(batch):
                results[i] = ProtectedImage(
                    rgb=to_uint8(protected[j]), alpha=images[i].alpha,
                    budget=MeasuredBudget(linf_255=spent["linf_255"][j], l2_255=spent["l2_255"][j],
                                          psnr_db=spent["psnr_db"][j], ssim=spent["ssim"][j],
                                          perceptual=spent[distance.name][j]))
    return ProtectionRun(images=results, protection=spec,
                         stated=stated_budget(spec, distance.name, next(iter(groups)) if len(groups) == 1 else None),
                         model=identity.as_dict(), perceptual={"name": distance.name},
                         seconds=round(time.perf_counter() - t0, 3), device=device,
                         pipelines=pipelines.used() if pipelines else {})
