"""The evaluate job: uploaded protections measured against their clean originals, or the protections x
purifiers matrix run on the clean images; with an edit, the editing scenario (docs/diffusion.md)."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from impress.contract import EvaluateParams, vae_for
from impress.images import DecodedImage
from impress.records import InputRole, JobResult
from impress.results import PerceptualIdentity
from impress.scenarios import EditParams

from ..engine.diffusion.scenario import EditingRun, PipelineSet
from ..engine.models import load_vae, resolve_device
from ..engine.tensors import square_images, to_tensor
from ..runner import JobContext


def mask_tensor(masks: list[DecodedImage], size: Optional[int] = None) -> torch.Tensor:
    """Uploaded inpainting masks (white = regenerate) as B x 1 x H x W of 0/1, split at mid-grey as
    PhotoGuard's prepare_mask_and_masked_image does; with `size`, cropped and resized as the matrix
    brings its images to size x size."""
    if size is not None:
        return (square_images(masks, size).mean(dim=1, keepdim=True) >= 0).float()
    return torch.cat([torch.from_numpy((m.rgb.mean(axis=2) >= 127.5).astype(np.float32))[None, None] for m in masks])


def editing_run(ctx: JobContext, edit: Optional[EditParams], pipelines: PipelineSet, distance, clean: torch.Tensor,
                size: Optional[int]) -> Optional[EditingRun]:
    """The evaluation's editing scenario (None when it asks for none): the clean images edited once, with
    the uploaded masks if any."""
    if edit is None:
        return None
    masks = [item.image for item in ctx.role(InputRole.mask)]
    mask = mask_tensor(masks, size).to(clean.device) if masks else None
    return EditingRun(pipelines, edit, distance, clean, mask, batch=ctx.settings.batch_size)


def evaluate(ctx: JobContext[EvaluateParams]) -> JobResult:
    from ..engine.matrix import measure_uploaded, run_matrix
    from ..engine.perceptual import load_perceptual
    from ..engine.report import html_report, markdown_report

    params = ctx.params
    device = resolve_device(ctx.settings.device)
    vae, identity = load_vae(ctx.record.vae, device)
    distance = load_perceptual(ctx.record.perceptual, device)
    clean = ctx.role(InputRole.clean)
    pipelines = PipelineSet.from_settings(ctx.settings, device)  # loaded only by what uses them

    def impress_vae(preset: str):
        """IMPRESS purifiers run on their preset's model (the service's, when it configures one)."""
        return load_vae(vae_for(preset, ctx.settings.vae), device)[0]

    t0 = time.perf_counter()
    files = []
    if ctx.role(InputRole.protected):
        def stack(role: InputRole) -> torch.Tensor:
            return torch.cat([to_tensor(item.image.rgb) for item in ctx.role(role)]).to(device)

        clean_x = stack(InputRole.clean)
        editing = editing_run(ctx, params.edit, pipelines, distance, clean_x, None)
        metrics = measure_uploaded(vae, identity, distance, clean_x, stack(InputRole.protected),
                                   stack(InputRole.purified) if ctx.role(InputRole.purified) else None,
                                   params.purifier_choices(), ctx.settings.batch_size, pipelines=pipelines,
                                   editing=editing, impress_vae=impress_vae, reporter=ctx.reporter)
    else:
        clean_x = square_images([item.image for item in clean], params.size).to(device)
        editing = editing_run(ctx, params.edit, pipelines, distance, clean_x, params.size)
        metrics = run_matrix(vae, identity, distance, clean_x, [item.meta.name for item in clean],
                             params.protection_choices(), params.purifier_choices(), batch=ctx.settings.batch_size,
                             pipelines=pipelines, editing=editing, impress_vae=impress_vae, reporter=ctx.reporter)
        files = [ctx.put_file("report.html", html_report(metrics).encode(), "text/html"),
                 ctx.put_file("results.md", markdown_report(metrics).encode(), "text/markdown")]
    return JobResult(metrics=metrics, files=files, model=identity, perceptual=PerceptualIdentity(name=distance.name),
                     seconds=round(time.perf_counter() - t0, 3), device=device)
