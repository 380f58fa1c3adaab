"""The purify job: IMPRESS on every input image, each result the PNG a user saves (with its alpha); the
methods amortised and cascade in handlers/amortised.py."""
from __future__ import annotations

from impress.contract import PurifyParams
from impress.records import InputRole, JobResult, PurifierUsed, ResultImage

from ..engine.pipeline import EngineOptions, run_purification
from ..runner import JobContext
from . import png_name
from .amortised import amortised


def purify(ctx: JobContext[PurifyParams]) -> JobResult:
    if ctx.params.method != "impress":
        return amortised(ctx)
    items = ctx.role(InputRole.image)
    run = run_purification([item.image for item in items], ctx.params, vae=ctx.record.vae,
                           perceptual=ctx.record.perceptual, options=EngineOptions.from_settings(ctx.settings),
                           reporter=ctx.reporter, report_every=ctx.settings.progress_every)
    images = [ResultImage(name=png_name(item.meta.name), blob=ctx.put_png(im.rgb, item.image.alpha),
                          width=item.image.width, height=item.image.height, iterations=im.iterations,
                          stop_reason=im.stop_reason, final=im.trace[-1] if im.trace else None, trace=im.trace)
              for item, im in zip(items, run.images)]
    return JobResult(images=images, model=run.model, perceptual=run.perceptual, seconds=round(run.seconds, 3),
                     device=run.device, engine=run.engine, purifier=PurifierUsed(method="impress"))
