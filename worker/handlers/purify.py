"""The purify job: IMPRESS on every input image, each result the PNG a user saves (with its alpha and
its signed manifest); the methods amortised and cascade in handlers/amortised.py. An image that fails
on its own is recorded with its code while the others succeed; when every image failed, the job fails
with the first one's code."""
from __future__ import annotations

from impress.contract import PurifyParams
from impress.manifest import ManifestMethod
from impress.records import ImageFailure, InputRole, JobResult, PurifierUsed, ResultImage

from ..engine.pipeline import EngineOptions, run_purification
from ..provenance import Made, Making, signed_results
from ..runner import ImagesFailed, JobContext
from .amortised import amortised


def purify(ctx: JobContext[PurifyParams]) -> JobResult:
    if ctx.params.method != "impress":
        return amortised(ctx)
    items = ctx.role(InputRole.image)
    options = EngineOptions.from_settings(ctx.settings)
    run = run_purification([item.image for item in items], ctx.params, vae=ctx.record.vae,
                           perceptual=ctx.record.perceptual, options=options,
                           reporter=ctx.reporter, report_every=ctx.settings.progress_every)
    failed = [ImageFailure(input_index=i, name=item.meta.name, error=im.error)
              for i, (item, im) in enumerate(zip(items, run.images)) if im.error is not None]
    if len(failed) == len(items):
        raise ImagesFailed(failed[0].error)
    done = [(i, item, im) for i, (item, im) in enumerate(zip(items, run.images)) if im.error is None]
    making = Making(ctx.record.id, ManifestMethod(kind="purify", name="impress", schedule=ctx.params.schedule,
                                                  parameters=ctx.params.model_dump(mode="json")),
                    run.model, run.perceptual.name, run.device)
    signed = signed_results(ctx.store, ctx.settings, making, [
        Made(item.meta, item.image.rgb, im.rgb, item.image.alpha) for _, item, im in done], options.tiling)
    images = [ResultImage(name=manifest.output["name"], blob=ctx.store.put_blob(png), width=item.image.width,
                          height=item.image.height, iterations=im.iterations, stop_reason=im.stop_reason,
                          final=im.trace[-1] if im.trace else None, trace=im.trace, manifest=manifest, input_index=i)
              for (i, item, im), (png, manifest) in zip(done, signed)]
    return JobResult(images=images, failed_images=failed, model=run.model, perceptual=run.perceptual,
                     seconds=round(run.seconds, 3), device=run.device, engine=run.engine,
                     purifier=PurifierUsed(method="impress"))
