"""The protect job: one protection applied to the uploaded images (toward an uploaded target, if any),
each 8-bit result stored with its measured budget and its signed manifest."""
from __future__ import annotations

from impress.contract import ProtectParams, StopReason
from impress.manifest import ManifestMethod
from impress.records import InputRole, JobResult, ResultImage

from ..engine.models import resolve_device
from ..provenance import Made, Making, signed_results
from ..runner import JobContext


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
    making = Making(ctx.record.id, ManifestMethod(kind="protect", name=protection.name,
                                                  parameters=protection.params.model_dump(mode="json")),
                    run.model, run.perceptual.name, run.device)
    signed = signed_results(ctx.store, ctx.settings, making,
                            [Made(item.meta, item.image.rgb, im.rgb, im.alpha) for item, im in zip(items, run.images)])
    images = [ResultImage(name=manifest.output["name"], blob=ctx.store.put_blob(png), width=item.image.width,
                          height=item.image.height, iterations=protection.step_count or 0,
                          stop_reason=StopReason.completed, trace=[], budget=im.budget, manifest=manifest)
              for item, im, (png, manifest) in zip(items, run.images, signed)]
    return JobResult(images=images, metrics=run.metrics(targets[0].meta.name if targets else None), model=run.model,
                     perceptual=run.perceptual, seconds=run.seconds, device=run.device)
