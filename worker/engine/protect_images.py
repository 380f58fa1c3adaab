"""Protect decoded images end to end: the models, a target fitted to each size, the 8-bit result and
its measured budget. The entry point of `impress protect` and of protect jobs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from impress.contract import ErrorCode
from impress.images import DecodedImage, ImageRejected
from impress.methods import MethodChoice
from impress.pipelines import check_size
from impress.progress import SILENT, Reporter, spans
from impress.results import (MeasuredBudget, MethodLabel, ModelIdentity, PerceptualIdentity, PipelineIdentity,
                             ProtectionMetrics, StatedBudget)

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
    stated: StatedBudget            # what the protection promises (Protection.stated_budget; an L2 budget
    #                                 on the images' size when they share one)
    model: ModelIdentity
    perceptual: PerceptualIdentity
    seconds: float
    device: str
    pipelines: dict[str, PipelineIdentity]   # diffusion pipelines used, by kind (empty for the VAE protections)

    def metrics(self, target: Optional[str]) -> ProtectionMetrics:
        """What ran and what it promises, toward the target named `target` (None: the protection's own)."""
        return ProtectionMetrics(protection=MethodLabel(name=self.protection.name,
                                                        params=self.protection.params.model_dump()),
                                 stated=self.stated, target=target, pipelines=self.pipelines)


def run_protection(images: list[DecodedImage], protection: MethodChoice, *, vae: str, perceptual: str, device: str,
                   target: Optional[DecodedImage] = None, batch_size: int = 4, pipelines=None,
                   reporter: Reporter = SILENT) -> ProtectionRun:
    """Protect `images` (any sizes; same-size images share batches) with `protection`, toward `target`
    when given (fitted to each size), else the protection's own default target. Diffusion protections
    run on `pipelines` (diffusion.scenario.PipelineSet); ImageRejected(invalid_parameter) first when an
    image's size is one their pipeline cannot work at (impress/pipelines.py). The `reporter` counts
    steps times images."""
    kind = protection.params.pipeline_kind
    for i, im in enumerate(images if kind is not None and pipelines is not None else []):
        try:
            check_size(im.height, im.width, [(f"protection {protection.label!r}", kind)], pipelines.names)
        except ValueError as exc:
            raise ImageRejected(ErrorCode.invalid_parameter, f"image {i + 1}: {exc}") from None
    vae_model, identity = load_vae(vae, device)
    distance = load_perceptual(perceptual, device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.height, im.width), []).append(i)
    batches = [(height, width, indices[k:k + batch_size]) for (height, width), indices in groups.items()
               for k in range(0, len(indices), batch_size)]
    steps = protection.step_count or 1
    results: list[Optional[ProtectedImage]] = [None] * len(images)
    t0 = time.perf_counter()
    for (height, width, batch), share in zip(batches, spans(reporter, [steps * len(b) for _, _, b in batches])):
        goal = None if target is None else fitted(target, height, width).to(device)
        clean = torch.cat([to_tensor(images[i].rgb) for i in batch]).to(device)
        protected = apply_protection(protection, vae_model, clean, distance, target=goal, pipelines=pipelines,
                                     reporter=share)
        spent = budget(protected, clean, distance)
        for j, i in enumerate(batch):
            results[i] = ProtectedImage(
                rgb=to_uint8(protected[j]), alpha=images[i].alpha,
                budget=MeasuredBudget(**{figure: values[j] for figure, values in spent}))
    return ProtectionRun(images=results, protection=protection,
                         stated=stated_budget(protection, next(iter(groups)) if len(groups) == 1 else None),
                         model=identity, perceptual=PerceptualIdentity(name=distance.name),
                         seconds=round(time.perf_counter() - t0, 3), device=device,
                         pipelines=pipelines.used() if pipelines else {})
