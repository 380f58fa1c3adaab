"""Running one job from its Redis record: the task bodies' only logic. Usable without Celery.

`run_job` owns what every kind shares (start, inputs, failure codes, cancel); one handler per kind
turns decoded inputs into a JobResult.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch

from impress.contract import (DEFAULT_PRESET, DetectParams, ErrorCode, EvaluateParams, JobKind, JobState,
                              PurifyParams, StopReason, vae_for)
from impress.images import DecodedImage, ImageRejected, decode_image
from impress.logs import job_context
from impress.manifest import ManifestMethod
from impress.records import (DetectedImage, ImageFailure, InputImage, InputRole, JobError, JobRecord, JobResult,
                             ResultFile, ResultImage)
from impress.settings import Settings
from impress.store import JobStore

from .engine.diffusion.scenario import PipelineSet
from .engine.models import ModelUnavailable, load_vae, resolve_device
from .engine.pipeline import EngineOptions, run_purification
from .engine.purify import NonFiniteLoss
from .protect_job import protect_handler
from .provenance import Made, Making, signed_results
from .scenario_jobs import editing_run, mimicry_handler

log = logging.getLogger("impress.worker")


class Canceled(Exception):
    pass


class ImagesFailed(Exception):
    """Every image of the job failed on its own: the job fails with the first one's error."""

    def __init__(self, error: JobError):
        super().__init__(error.message)
        self.error = error


@dataclass
class JobInput:
    meta: InputImage
    image: DecodedImage


@dataclass
class JobContext:
    """What a handler gets: the record, its decoded inputs by role, and progress/cancel reporting."""

    store: JobStore
    settings: Settings
    record: JobRecord
    inputs: dict[InputRole, list[JobInput]]

    def role(self, role: InputRole) -> list[JobInput]:
        return self.inputs.get(role, [])

    def progress(self, step: int, total: int, *_) -> bool:
        """Record progress; True when the job must stop."""
        return self.store.progress(self.record.id, step, total)

    def put_file(self, name: str, data: bytes, media_type: str) -> ResultFile:
        return ResultFile(name=name, blob=self.store.put_blob(data), media_type=media_type)


def purify_handler(ctx: JobContext) -> JobResult:
    params = ctx.record.params
    assert isinstance(params, PurifyParams)
    items = ctx.role(InputRole.image)
    run = run_purification([item.image for item in items], params, vae=ctx.record.vae,
                           perceptual=ctx.record.perceptual, options=EngineOptions.from_settings(ctx.settings),
                           progress=ctx.progress, report_every=ctx.settings.progress_every)
    if any(im.stop_reason == StopReason.canceled and im.error is None for im in run.images):
        raise Canceled
    failed = [ImageFailure(input_index=i, name=item.meta.name, error=im.error)
              for i, (item, im) in enumerate(zip(items, run.images)) if im.error is not None]
    if len(failed) == len(items):
        raise ImagesFailed(failed[0].error)
    done = [(i, item, im) for i, (item, im) in enumerate(zip(items, run.images)) if im.error is None]
    options = EngineOptions.from_settings(ctx.settings)
    making = Making(ctx.record.id, ManifestMethod(kind="purify", name="impress", parameters=params.model_dump(mode="json"),
                                                  schedule=params.schedule),
                    run.model, run.perceptual["name"], run.device)
    signed = signed_results(ctx.store, ctx.settings, making, [
        Made(item.meta, item.image.rgb, im.rgb, item.image.alpha) for _, item, im in done], options.tiling)
    images = [ResultImage(name=manifest.output["name"], blob=ctx.store.put_blob(png), width=item.image.width,
                          height=item.image.height, iterations=im.iterations, stop_reason=im.stop_reason,
                          final=im.trace[-1] if im.trace else None, trace=im.trace, manifest=manifest, input_index=i)
              for (i, item, im), (png, manifest) in zip(done, signed)]
    return JobResult(images=images, failed_images=failed, model=run.model, perceptual=run.perceptual, seconds=round(run.seconds, 3),
                     device=run.device, engine=run.engine)


def detect_handler(ctx: JobContext) -> JobResult:
    from .engine.detect import consistency_scores, verdicts
    from .engine.tensors import to_tensor

    params = ctx.record.params
    assert isinstance(params, DetectParams)
    items = ctx.role(InputRole.image)
    device = resolve_device(ctx.settings.device)
    vae, identity = load_vae(ctx.record.vae, device)
    t0 = time.perf_counter()
    scores = consistency_scores(vae, [to_tensor(item.image.rgb).to(device) for item in items],
                                ctx.settings.batch_size * 4)
    threshold, low = params.thresholds((ctx.settings.detect_threshold, ctx.settings.detect_low_threshold))
    detections = [DetectedImage(name=item.meta.name, score=score, verdict=verdict, threshold=threshold,
                                low_threshold=low, model=identity.name, model_revision=identity.revision)
                  for item, score, verdict in zip(items, scores, verdicts(scores, threshold, low))]
    return JobResult(detections=detections, model=identity.as_dict(), seconds=round(time.perf_counter() - t0, 3),
                     device=device)


def evaluate_handler(ctx: JobContext) -> JobResult:
    from .engine.matrix import measure_uploaded, run_matrix
    from .engine.perceptual import load_perceptual
    from .engine.report import html_report, markdown_report
    from .engine.tensors import square_images, to_tensor

    params = ctx.record.params
    assert isinstance(params, EvaluateParams)
    device = resolve_device(ctx.settings.device)
    vae, identity = load_vae(ctx.record.vae, device)
    distance = load_perceptual(ctx.record.perceptual, device)
    protections, purifiers = params.protection_choices(), params.purifier_choices()
    clean = ctx.role(InputRole.clean)
    pipelines = PipelineSet.from_settings(ctx.settings, device)  # loaded only by what uses them
    impress_vae = lambda preset: load_vae(vae_for(preset, ctx.settings.vae), device)[0]  # noqa: E731
    t0 = time.perf_counter()
    files = []
    if ctx.role(InputRole.protected):
        stack = lambda role: torch.cat([to_tensor(item.image.rgb) for item in ctx.role(role)]).to(device)  # noqa: E731
        clean_x = stack(InputRole.clean)
        editing = editing_run(ctx, params.edit, pipelines, distance, clean_x, None)
        metrics = measure_uploaded(vae, identity.as_dict(), distance, clean_x, stack(InputRole.protected),
                                   stack(InputRole.purified) if ctx.role(InputRole.purified) else None, purifiers,
                                   ctx.settings.batch_size, pipelines=pipelines, editing=editing,
                                   impress_vae=impress_vae).model_dump(mode="json")
    else:
        clean_x = square_images([item.image for item in clean], params.size).to(device)
        editing = editing_run(ctx, params.edit, pipelines, distance, clean_x, params.size)
        result = run_matrix(vae, identity.as_dict(), distance, clean_x, [item.meta.name for item in clean],
                            protections, purifiers, batch=ctx.settings.batch_size, pipelines=pipelines, editing=editing,
                            impress_vae=impress_vae)
        metrics = result.model_dump(mode="json")
        files = [ctx.put_file("report.html", html_report(result).encode(), "text/html"),
                 ctx.put_file("results.md", markdown_report(result).encode(), "text/markdown")]
    return JobResult(metrics=metrics, files=files, model=identity.as_dict(), perceptual={"name": distance.name},
                     seconds=round(time.perf_counter() - t0, 3), device=device)


HANDLERS: dict[JobKind, Callable[[JobContext], JobResult]] = {
    JobKind.purify: purify_handler, JobKind.detect: detect_handler, JobKind.evaluate: evaluate_handler,
    JobKind.mimicry: mimicry_handler, JobKind.protect: protect_handler}


def load_inputs(store: JobStore, settings: Settings, record: JobRecord) -> dict[InputRole, list[JobInput]]:
    """Every input of the job decoded, by role; ImageRejected(input_expired) when a blob is gone."""
    inputs: dict[InputRole, list[JobInput]] = {}
    for item in record.inputs:
        data = store.get_blob(item.blob)
        if data is None:
            raise ImageRejected(ErrorCode.input_expired, f"input {item.name} expired before the job ran")
        decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        inputs.setdefault(item.role, []).append(JobInput(item, decoded))
    return inputs


def warm_up_detection(settings: Settings) -> None:
    """Load the detection model now (imports included: seconds on a busy CPU), so a triage worker's
    first sync detect is answered within its timeout. A model that cannot load is only logged here:
    the job that needs it records model_unavailable."""
    from .engine import detect  # noqa: F401 - the import is part of the warm-up

    try:
        load_vae(vae_for(DEFAULT_PRESET, settings.vae), resolve_device(settings.device))
        log.info("detection model loaded")
    except ModelUnavailable as exc:
        log.warning("detection model not loaded: %s", exc)


def release_device_memory() -> None:
    """Give cached GPU memory back after an out-of-memory failure, so the next job starts clean."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_job(store: JobStore, settings: Settings, job_id: str, on_time_limit: type[BaseException]) -> str:
    """Run the job; returns its final state. Every failure ends in the record, never in the worker.
    Log lines about the job carry its id and the id of the request that created it."""
    with job_context(job_id):
        started, attempt = store.start(job_id, settings.max_attempts)
        record = store.get(job_id)
        if record is None:  # a late message for a job that expired: nothing to do, nothing to recreate
            log.info("job %s expired before it ran; message dropped", job_id)
            return "expired"
    with job_context(job_id, record.request_id):
        if not started:
            log.info("job %s not started (state %s, attempt %d)", job_id, record.state.value, attempt)
            return record.state.value
        log.info("job %s (%s) started, attempt %d, %d inputs", job_id, record.kind.value, attempt,
                 len(record.inputs))
        return run_started(store, settings, record, on_time_limit)


def run_started(store: JobStore, settings: Settings, record: JobRecord, on_time_limit: type[BaseException]) -> str:
    """The started job's handler, and its outcome recorded: succeeded, canceled, or failed with a code."""
    job_id = record.id
    try:
        inputs = load_inputs(store, settings, record)
        result = HANDLERS[record.kind](JobContext(store, settings, record, inputs))
        if store.cancel_requested(job_id):
            raise Canceled
        store.succeed(job_id, result)
        log.info("job %s succeeded in %.2fs on %s with %s", job_id, result.seconds, result.device, result.model["name"])
        return JobState.succeeded.value
    except Canceled:
        store.finish_canceled(job_id)
        log.info("job %s canceled", job_id)
        return JobState.canceled.value
    except ModelUnavailable as exc:
        store.fail(job_id, ErrorCode.model_unavailable, str(exc))
    except ImageRejected as exc:
        store.fail(job_id, exc.code, exc.message)
    except ImagesFailed as exc:
        store.fail(job_id, exc.error.code, exc.error.message)
    except NonFiniteLoss as exc:
        store.fail(job_id, ErrorCode.numerical_error, str(exc))
    except (torch.OutOfMemoryError, MemoryError) as exc:  # larger batches were split already (engine.pipeline)
        release_device_memory()
        store.fail(job_id, ErrorCode.out_of_memory, f"out of memory even with one image per batch: {exc}")
    except on_time_limit:
        store.fail(job_id, ErrorCode.time_limit_exceeded, f"the job ran past {settings.soft_time_limit_s}s")
    except Exception as exc:  # the record must say what happened; the worker stays up
        log.exception("job %s failed", job_id)
        store.fail(job_id, ErrorCode.internal_error, f"{type(exc).__name__}: {exc}")
    log.info("job %s failed", job_id)
    return JobState.failed.value
