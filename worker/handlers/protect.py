"""The protect job: one protection applied to the uploaded images (toward an uploaded target, if any),
each 8-bit result stored with its measured budget."""
from __future__ import annotations

from impress.contract import ProtectParams, StopReason
from impress.records import InputRole, JobResult, ResultImage

from ..engine.models import resolve_device
from ..runner import JobContext
from . import png_name


def protect(ctx: JobContext[ProtectParams]) -> JobResult:
    from ..engine.diffusion.scenario import PipelineSet
    from ..engine.protect_images import run_protection

    protection = ctx.params.protection
    items, targets = ctx.role(InputRole.image), ctx.role(InputRole.target)
    device = resolve_device(ctx.settings.device)
    run = run_protection([item.image for item in items], protection, vae=ctx.record.vae,
                         perceptual=ctx.record.perceptual, device=device,
                         target=targets[0].image if targets else None, batch_size=ctx.settings.batch_size,
                         pipelines=PipelineSet.from_settings(ctx.settings, device), reporter=ctx.reporter)
    images = [ResultImage(name=png_name(item.meta.name), blob=ctx.put_png(im.rgb, im.alpha), width=item.image.width,
                          height=item.image.height, iterations=protection.step_count or 0,
                          stop_reason=StopReason.completed, trace=[], budget=im.budget)
              for item, im in zip(items, run.images)]
    metrics = {"protection": {"name": protection.name, "params": protection.params.model_dump()},
               "stated": run.stated, "target": targets[0].meta.name if targets else None, "pipelines": run.pipelines}
    return JobResult(images=images, metrics=metrics, model=run.model, perceptual=run.perceptual, seconds=run.seconds,
                     device=run.device)
