"""The mimicry job (docs/diffusion.md): LoRA fine-tuning on each uploaded set (clean, protected,
purified), scored on what it learned of the clean images; generated samples come back as PNG files
named <set>-<i>.png. Its pipeline comes from IMPRESS_PIPELINE (model_unavailable without it)."""
from __future__ import annotations

import time

from impress.images import encode_png
from impress.records import InputRole, JobResult
from impress.scenarios import MimicryParams

from ..engine.diffusion.scenario import PipelineSet
from ..engine.models import resolve_device
from ..engine.tensors import square_images, to_uint8
from ..runner import JobContext


def mimicry(ctx: JobContext[MimicryParams]) -> JobResult:
    from ..engine.diffusion.mimicry import mimicry as run_mimicry

    params = ctx.params
    device = resolve_device(ctx.settings.device)
    pipelines = PipelineSet.from_settings(ctx.settings, device)
    pipe = pipelines.get("img2img")
    sets = {role.value: square_images([item.image for item in ctx.role(role)], params.size).to(device)
            for role in (InputRole.clean, InputRole.protected, InputRole.purified) if ctx.role(role)}
    t0 = time.perf_counter()
    run = run_mimicry(pipe, sets["clean"], sets, params, reporter=ctx.reporter)
    files = [ctx.put_file(f"{name}-{i}.png", encode_png(to_uint8(sample)), "image/png")
             for name, samples in run.samples.items() for i, sample in enumerate(samples)]
    pipeline = pipelines.used()["img2img"]
    return JobResult(metrics=run.metrics(pipeline, params), files=files, model=pipeline,
                     seconds=round(time.perf_counter() - t0, 3), device=device)
