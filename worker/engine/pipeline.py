"""Purify decoded images end to end: pick the models, group by size, batch, run, encode PNGs.

The one entry point that the CLI, the Celery task and the tests share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from impress.contract import PurifyParams, vae_for
from impress.images import DecodedImage, encode_png

from .models import default_device, load_vae
from .perceptual import load_perceptual
from .purify import ProgressFn, purify
from .tensors import to_tensor, to_uint8


@dataclass
class PurifiedImage:
    png: bytes
    width: int
    height: int
    iterations: int
    stop_reason: str
    trace: list[dict]


@dataclass
class PurificationRun:
    images: list[PurifiedImage]
    model: dict
    perceptual: dict
    seconds: float
    device: str


def resolve_device(device: str) -> str:
    return default_device() if device == "auto" else device


def run_purification(images: list[DecodedImage], params: PurifyParams, *, vae: Optional[str],
                     perceptual: str, device: str = "auto", batch_size: int = 4,
                     progress: Optional[ProgressFn] = None, report_every: int = 10) -> PurificationRun:
    """Purify `images` (any sizes; same-size images share batches). `progress(step, total, losses)`
    sees steps summed over all batches; returning True cancels the rest."""
    device = resolve_device(device)
    vae_model, identity = load_vae(vae_for(params, vae), device)
    distance = load_perceptual(perceptual, device)

    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.height, im.width), []).append(i)
    batches = [idx[k:k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)]
    total = params.iters * len(batches)

    results: list[Optional[PurifiedImage]] = [None] * len(images)
    seconds, done, canceled = 0.0, 0, False
    for batch in batches:
        if canceled:
            break
        x = torch.cat([to_tensor(images[i].rgb) for i in batch])
        offset = done

        def batch_progress(step, _total, losses, offset=offset):
            return progress is not None and progress(offset + step, total, losses)

        outcome = purify(vae_model, distance, x, params, device=device, progress=batch_progress,
                         report_every=report_every)
        seconds += outcome.seconds
        done += outcome.iterations if outcome.stop_reason != "plateau" else params.iters
        canceled = outcome.stop_reason == "canceled"
        for j, i in enumerate(batch):
            rgb = to_uint8(outcome.images[j])
            results[i] = PurifiedImage(png=encode_png(rgb, images[i].alpha), width=images[i].width,
                                       height=images[i].height, iterations=outcome.iterations,
                                       stop_reason=outcome.stop_reason, trace=outcome.traces[j])
    return PurificationRun(images=[r for r in results if r is not None], model=identity.as_dict(),
                           perceptual={"name": distance.name}, seconds=seconds, device=device)
