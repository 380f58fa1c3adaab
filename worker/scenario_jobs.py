"""Job handlers of the diffusion scenarios (docs/diffusion.md): the editing scenario inside evaluation
jobs, and the style-mimicry job. Pipelines come from the service's settings (IMPRESS_PIPELINE, ...); a
scenario whose pipeline is not configured or not on this machine fails the job with model_unavailable."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from impress.images import DecodedImage, encode_png
from impress.records import InputRole, JobResult, ResultFile
from impress.scenarios import EditParams, MimicryParams

from .engine.diffusion.scenario import EditingRun, PipelineSet
from .engine.models import resolve_device
from .engine.tensors import square_images, to_uint8

def mask_tensor(masks: list[DecodedImage], size: Optional[int] = None) -> torch.Tensor:
    """Uploaded inpainting masks (white = regenerate) as B x 1 x H x W of 0/1, split at mid-grey as
    PhotoGuard's prepare_mask_and_masked_image does; with `size`, cropped and resized as the matrix
    brings its images to size x size."""
    if size is not None:
        return (square_images(masks, size).mean(dim=1, keepdim=True) >= 0).float()
    return torch.cat([torch.from_numpy((m.rgb.mean(axis=2) >= 127.5).astype(np.float32))[None, None] for m in masks])


def editing_run(ctx, params: Optional[EditParams], pipelines: PipelineSet, distance, clean: torch.Tensor,
                size: Optional[int]) -> Optional[EditingRun]:
    """The evaluation's editing scenario (None when it asks for none): the clean images edited once, with
    the uploaded masks if any."""
    if params is None:
        return None
    masks = [item.image for item in ctx.role(InputRole.mask)]
    mask = mask_tensor(masks, size).to(clean.device) if masks else None
    return EditingRun(pipelines, params, distance, clean, mask, batch=ctx.settings.batch_size)


def mimicry_handler(ctx) -> JobResult:
    """Fine-tune LoRA on each uploaded set (clean, protected, purified) and score what it learned of the
    clean images; generated samples come back as PNG files named <set>-<i>.png."""
    from .engine.diffusion.mimicry import mimicry
    from .jobs import Canceled

    params = ctx.record.params
    assert isinstance(params, MimicryParams)
    device = resolve_device(ctx.settings.device)
    pipelines = PipelineSet.from_settings(ctx.settings, device)
    pipe = pipelines.get("img2img")
    sets = {role.value: square_images([item.image for item in ctx.role(role)], params.size).to(device)
            for role in (InputRole.clean, InputRole.protected, InputRole.purified) if ctx.role(role)}

    def progress(step: int, total: int) -> None:
        if ctx.progress(step, total):
            raise Canceled

    t0 = time.perf_counter()
    run = mimicry(pipe, sets["clean"], sets, params, progress=progress)
    files = [ResultFile(name=f"{name}-{i}.png", blob=ctx.store.put_blob(encode_png(to_uint8(sample))),
                        media_type="image/png")
             for name, result in run.sets.items() for i, sample in enumerate(result.samples)]
    return JobResult(metrics={"pipeline": pipelines.used()["img2img"], "params": params.model_dump(), **run.metrics()},
                     files=files, model=pipelines.used()["img2img"], seconds=round(time.perf_counter() - t0, 3),
                     device=device)
