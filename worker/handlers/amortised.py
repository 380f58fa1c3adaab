"""The purify job with method amortised or cascade (docs/amortised.md): one pass of the amortised
network, and for the cascade IMPRESS warm-started from it for the images the detection still flags.
The result names the method, the network's weights (sha256) and each image's path and seconds."""
from __future__ import annotations

from impress.contract import PurifyParams
from impress.manifest import ManifestMethod
from impress.methods import AMORTISED_WEIGHTS
from impress.records import InputRole, JobResult, PurifierUsed, ResultImage

from ..engine.models import load_vae
from ..engine.pipeline import EngineOptions
from ..provenance import Made, Making, signed_results
from ..runner import JobContext


def amortised(ctx: JobContext[PurifyParams]) -> JobResult:
    from ..engine.amortised.purification import run_amortised, run_cascade

    items = ctx.role(InputRole.image)
    decoded = [item.image for item in items]
    options = EngineOptions.from_settings(ctx.settings)
    if ctx.params.method == "cascade":
        run = run_cascade(decoded, ctx.params, weights=AMORTISED_WEIGHTS, vae=ctx.record.vae,
                          perceptual=ctx.record.perceptual, threshold=ctx.settings.detect_threshold, options=options,
                          reporter=ctx.reporter, report_every=ctx.settings.progress_every)
    else:
        run = run_amortised(decoded, weights=AMORTISED_WEIGHTS, options=options)
    parameters = {"weights": run.purifier.name, "weights_sha256": run.purifier.revision,
                  **(ctx.params.model_dump(mode="json") if ctx.params.method == "cascade" else {})}
    # The manifest measures the effect with the job's autoencoder and distance (the network's own
    # weights are in its parameters); the amortised pass alone loads neither.
    autoencoder = run.model if ctx.params.method == "cascade" else load_vae(ctx.record.vae, run.device)[1]
    making = Making(ctx.record.id, ManifestMethod(kind="purify", name=ctx.params.method, parameters=parameters,
                                                  schedule=ctx.params.schedule if ctx.params.method == "cascade" else None),
                    autoencoder, ctx.record.perceptual, run.device)
    signed = signed_results(ctx.store, ctx.settings, making, [
        Made(item.meta, item.image.rgb, im.rgb, item.image.alpha) for item, im in zip(items, run.images)])
    images = [ResultImage(name=manifest.output["name"], blob=ctx.store.put_blob(png), width=item.image.width,
                          height=item.image.height, iterations=im.iterations, stop_reason=im.stop_reason,
                          final=im.trace[-1] if im.trace else None, trace=im.trace, manifest=manifest, input_index=i,
                          path=im.path, seconds=round(im.seconds, 4), detection_score=im.score)
              for i, (item, im, (png, manifest)) in enumerate(zip(items, run.images, signed))]
    used = PurifierUsed(method=ctx.params.method, weights=run.purifier.name, weights_sha256=run.purifier.revision,
                        threshold=run.threshold)
    return JobResult(images=images, model=run.model, perceptual=run.perceptual, seconds=round(run.seconds, 3),
                     device=run.device, engine=run.engine, purifier=used)
