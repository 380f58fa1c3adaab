"""The protect job: apply one protection to the uploaded images (toward an uploaded target, if any)
and store each 8-bit result with its measured budget."""
from __future__ import annotations

from impress.contract import ProtectParams, StopReason
from impress.images import encode_png
from impress.records import InputRole, JobResult, ResultImage

from .engine.models import resolve_device


def protect_handler(ctx) -> JobResult:
    from .engine.diffusion.scenario import PipelineSet
    from .engine.protect_images import run_protection

    params = ctx.record.params
    assert isinstance(params, ProtectParams)
    spec = params.protection
    items, targets = ctx.role(InputRole.image), ctx.role(InputRole.target)
    device = resolve_device(ctx.settings.device)
    run = run_protection([item.image for item in items], spec, vae=ctx.record.vae, perceptual=ctx.record.perceptual,
                         device=device, target=targets[0].image if targets else None,
                         batch_size=ctx.settings.batch_size, pipelines=PipelineSet.from_settings(ctx.settings, device))
    images = [ResultImage(name=item.meta.name.rsplit(".", 1)[0] + ".png",
                          blob=ctx.store.put_blob(encode_png(im.rgb, im.alpha)), width=item.image.width,
                          height=item.image.height, iterations=spec.step_count or 0,
                          stop_reason=StopReason.completed, trace=[], budget=im.budget)
              for item, im in zip(items, run.images)]
    metrics = {"protection": {"name": spec.name, "params": spec.params.model_dump()}, "stated": run.stated,
               "target": targets[0].meta.name if targets else None, "pipelines": run.pipelines}
    return JobResult(images=images, metrics=metrics, model=run.model, perceptual=run.perceptual, seconds=run.seconds,
                     device=run.device)
